//! What cluster a run drives: its shape (`--coordinators`, `--workers`, `--pipelines`), its
//! broker (`--mqtt-url`), and the checks of planned phases against them, made before anything
//! starts.

use std::collections::BTreeMap;

use crate::backend::broker::MqttUrl;
use crate::phase::{Phase, Planned};
use crate::step::{Step, Target};

/// The seed's topology: 3 coordinators, 4 workers, 3 pipelines.
pub const SEED_COORDINATORS: u32 = 3;
pub const SEED_WORKERS: u32 = 4;
pub const SEED_PIPELINES: u32 = 3;
/// Most pipelines a run may ask for: two MQTT connections each stay within the embedded
/// broker's connection slots (cluster `broker.rs`) with the publisher and collector beside them.
pub const MAX_PIPELINES: u32 = 1000;

/// Flags that shape the cluster under test (flattened into the run's flags).
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// An external MQTT broker, e.g. mqtt://127.0.0.1:1883: every node, the publisher and the
    /// collector use it, and no broker is started. Give each run a broker of its own (pipeline
    /// sessions and topics are fixed names), with offline queues that cannot drop silently
    /// (mosquitto: `max_queued_messages 0`). `mqtt://user:password@host:port`: the account
    /// every worker, the publisher and the collector log in with (never shown in reports).
    #[arg(long, value_name = "mqtt://[user:password@]host:port")]
    pub mqtt_url: Option<MqttUrl>,
    /// Raft coordinators (quorum N/2 + 1).
    #[arg(long, default_value_t = SEED_COORDINATORS, value_parser = parse_coordinators)]
    pub coordinators: u32,
    /// Workers (homed as in the seed: 1 and 2 on coordinator-1, then round-robin from
    /// coordinator-2).
    #[arg(long, default_value_t = SEED_WORKERS, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub workers: u32,
    /// Filter pipelines `sensor_filter_1..=P`, one input topic each, spread over the groups c1
    /// and c2 (every third in c2: the seed's c1 = 1, 2 and c2 = 3).
    #[arg(long, default_value_t = SEED_PIPELINES, value_parser = clap::value_parser!(u32).range(1..=MAX_PIPELINES as i64))]
    pub pipelines: u32,
    /// A cluster profile (profiles/*.toml): how to start and read the implementation under
    /// test; `--cluster-bin` names its binary. Default: the reference cluster.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<std::path::PathBuf>,
}

fn parse_coordinators(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n @ (3 | 5)) => Ok(n),
        _ => Err(format!("'{s}': 3 or 5 coordinators (a quorum of 2 or 3)")),
    }
}

impl Default for ClusterArgs {
    fn default() -> Self {
        ClusterArgs {
            mqtt_url: None,
            coordinators: SEED_COORDINATORS,
            workers: SEED_WORKERS,
            pipelines: SEED_PIPELINES,
            profile: None,
        }
    }
}

/// How many worker links each coordinator holds when every worker is linked home
/// ([`crate::backend::home_of`]); the seed's 3 + 4: coordinator-1 = 2, -2 = 1, -3 = 1.
pub fn homes(coordinators: u32, workers: u32) -> BTreeMap<u32, u64> {
    let mut homes: BTreeMap<u32, u64> = (1..=coordinators).map(|c| (c, 0)).collect();
    for w in 1..=workers {
        *homes
            .entry(crate::backend::home_of(w, coordinators))
            .or_default() += 1;
    }
    homes
}

/// The group pipeline `index` (1-based) belongs to: every third in c2, the rest in c1 (the
/// seed's c1 = sensor_filter_1, sensor_filter_2; c2 = sensor_filter_3).
pub fn group_of(index: u32) -> &'static str {
    if index % 3 == 0 {
        "c2"
    } else {
        "c1"
    }
}

/// The pipelines of `group` among `sensor_filter_1..=pipelines` (empty for other groups).
pub fn group_pipelines(group: &str, pipelines: u32) -> Vec<String> {
    (1..=pipelines)
        .filter(|i| group_of(*i) == group)
        .map(|i| crate::traffic::pipeline_name(u64::from(i)))
        .collect()
}

/// Topology values a phase's detail line may name: `{coordinators}`, `{workers}`,
/// `{pipelines}`, and each less a constant (`{workers-2}`: survivors of a double kill).
pub const DETAIL_VALUES: [&str; 3] = ["coordinators", "workers", "pipelines"];

/// The value of a topology placeholder (`workers`, `workers-2`) from the trial's values, or
/// `None` when `name` is not one.
pub fn detail_value(
    name: &str,
    values: &std::collections::HashMap<String, String>,
) -> Option<String> {
    let (base, less) = match name.split_once('-') {
        Some((b, n)) => (b, n.parse::<u64>().ok()?),
        None => (name, 0),
    };
    if !DETAIL_VALUES.contains(&base) {
        return None;
    }
    let v: u64 = values.get(base)?.parse().ok()?;
    Some(v.saturating_sub(less).to_string())
}

/// True when `name` is a topology placeholder ([`detail_value`]).
pub fn is_detail_value(name: &str) -> bool {
    let base = name
        .split_once('-')
        .map_or(name, |(b, n)| if n.parse::<u64>().is_ok() { b } else { "" });
    DETAIL_VALUES.contains(&base)
}

impl ClusterArgs {
    /// The cluster profile: `--profile FILE`, else the reference cluster's.
    pub fn load_profile(&self) -> anyhow::Result<crate::profile::Profile> {
        match &self.profile {
            Some(path) => crate::profile::Profile::load(path),
            None => Ok(crate::profile::Profile::reference()),
        }
    }

    /// True for the seed's 3 coordinators, 4 workers and 3 pipelines.
    pub fn is_seed(&self) -> bool {
        (self.coordinators, self.workers, self.pipelines)
            == (SEED_COORDINATORS, SEED_WORKERS, SEED_PIPELINES)
    }

    /// The flags to repeat in a reproduce command (empty when all are defaults).
    pub fn reproduce(&self) -> String {
        let mut s = String::new();
        if let Some(url) = &self.mqtt_url {
            s += &format!(" --mqtt-url {url}");
        }
        if self.coordinators != SEED_COORDINATORS {
            s += &format!(" --coordinators {}", self.coordinators);
        }
        if self.workers != SEED_WORKERS {
            s += &format!(" --workers {}", self.workers);
        }
        if self.pipelines != SEED_PIPELINES {
            s += &format!(" --pipelines {}", self.pipelines);
        }
        if let Some(p) = &self.profile {
            s += &format!(" --profile {}", p.display());
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
                if let Some(why) = self.refuse(step) {
                    out.push(format!("{at}: step `{}`: {why}", step.action()));
                }
            }
        }
        out
    }

    fn refuse(&self, step: &Step) -> Option<String> {
        if let Some(url) = &self.mqtt_url {
            if step.targets().iter().any(|t| **t == Target::Broker) {
                return Some(format!(
                    "the broker is external ({url}, --mqtt-url): the harness neither starts nor \
                     faults it"
                ));
            }
        }
        let mut named: Vec<&str> = step
            .targets()
            .into_iter()
            .filter_map(|t| match t {
                Target::WorkerHosting(p) => Some(p.as_str()),
                _ => None,
            })
            .collect();
        match step {
            Step::Deploy(a) => {
                if let Some(p) = &a.pipelines {
                    named.extend(p.iter().map(String::as_str));
                } else if group_pipelines(&a.group, self.pipelines).is_empty() {
                    return Some(format!(
                        "group {} has no pipelines at --pipelines {}",
                        a.group, self.pipelines
                    ));
                }
            }
            Step::MeasureGap(a) => named.push(&a.pipeline),
            _ => {}
        }
        named
            .into_iter()
            .find(|name| !self.has_pipeline(name))
            .map(|name| {
                format!(
                    "pipeline {name} is not part of this workload (--pipelines {}: sensor_filter_1..={})",
                    self.pipelines, self.pipelines
                )
            })
    }

    fn has_pipeline(&self, name: &str) -> bool {
        name.strip_prefix("sensor_filter_")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=self.pipelines).contains(&n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_topology_is_homed_2_1_1() {
        assert_eq!(homes(3, 4), BTreeMap::from([(1, 2), (2, 1), (3, 1)]));
        assert_eq!(
            homes(5, 8),
            BTreeMap::from([(1, 3), (2, 2), (3, 1), (4, 1), (5, 1)])
        );
        assert_eq!(homes(3, 1), BTreeMap::from([(1, 1), (2, 0), (3, 0)]));
    }

    #[test]
    fn pipelines_spread_over_the_seed_groups() {
        assert_eq!(
            group_pipelines("c1", 3),
            ["sensor_filter_1", "sensor_filter_2"]
        );
        assert_eq!(group_pipelines("c2", 3), ["sensor_filter_3"]);
        assert_eq!(
            group_pipelines("c2", 7),
            ["sensor_filter_3", "sensor_filter_6"]
        );
        assert!(group_pipelines("c2", 2).is_empty());
        assert!(group_pipelines("other", 3).is_empty());
    }

    #[test]
    fn a_pipeline_outside_the_workload_is_refused() {
        let args = ClusterArgs {
            pipelines: 2,
            ..ClusterArgs::default()
        };
        let step: Step =
            toml::from_str("do = \"kill\"\ntarget = \"worker-hosting:sensor_filter_3\"")
                .expect("a step");
        assert_eq!(
            args.refuse(&step).as_deref(),
            Some("pipeline sensor_filter_3 is not part of this workload (--pipelines 2: sensor_filter_1..=2)")
        );
        assert_eq!(ClusterArgs::default().refuse(&step), None);
    }
}
