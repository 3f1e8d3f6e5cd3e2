//! What cluster a run drives: the broker (`--mqtt-url`), and the checks of planned phases
//! against it, made before anything starts.

use crate::backend::broker::MqttUrl;
use crate::phase::{Phase, Planned};
use crate::step::Target;

/// Flags that shape the cluster under test (flattened into the run's flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// An external MQTT broker, e.g. mqtt://127.0.0.1:1883: every node, the publisher and the
    /// collector use it, and no broker is started. Give each run a broker of its own (pipeline
    /// sessions and topics are fixed names), with offline queues that cannot drop silently
    /// (mosquitto: `max_queued_messages 0`).
    #[arg(long, value_name = "mqtt://host:port")]
    pub mqtt_url: Option<MqttUrl>,
}

impl ClusterArgs {
    /// The flags to repeat in a reproduce command (empty when all are defaults).
    pub fn reproduce(&self) -> String {
        let mut s = String::new();
        if let Some(url) = &self.mqtt_url {
            s += &format!(" --mqtt-url {url}");
        }
        s
    }

    /// Steps of the planned phases this cluster cannot run, as `file:line: step: why`.
    pub fn refused(&self, phases: &[Phase], plan: &[Planned]) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for planned in plan {
            if !seen.insert(planned.phase) {
                continue;
            }
            let phase = &phases[planned.phase];
            for (i, step) in phase.steps.iter().enumerate() {
                let at = phase.step_locations.get(i).map_or("?", String::as_str);
                if let Some(url) = &self.mqtt_url {
                    if step.targets().iter().any(|t| **t == Target::Broker) {
                        out.push(format!(
                            "{at}: step `{}`: the broker is external ({url}, --mqtt-url): the \
                             harness neither starts nor faults it",
                            step.action()
                        ));
                    }
                }
            }
        }
        out
    }
}
