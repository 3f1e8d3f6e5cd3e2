//! The replicated state machine's data: what every coordinator agrees on, and how commands change it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Command, CommandResult};
use crate::api::model::Connector;

/// Application state replicated by Raft. Serialized whole into snapshots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub connectors: BTreeMap<String, Connector>,
}

impl ClusterState {
    /// Apply one committed command. Must be deterministic: every node applies the same sequence.
    pub fn apply(&mut self, index: u64, command: &Command) -> CommandResult {
        let changed = match command {
            Command::PutConnector { connector } => {
                let previous = self
                    .connectors
                    .insert(connector.name.clone(), connector.clone());
                previous.as_ref() != Some(connector)
            }
        };
        CommandResult { index, changed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(name: &str, port: u16) -> Connector {
        Connector {
            name: name.into(),
            connector_type: "mqtt".into(),
            params: [("port".to_string(), serde_json::json!(port))].into(),
        }
    }

    #[test]
    fn put_connector_is_idempotent_by_name() {
        let mut state = ClusterState::default();
        let put = Command::PutConnector {
            connector: connector("mqtt_1", 1883),
        };
        assert!(state.apply(1, &put).changed);
        assert!(!state.apply(2, &put).changed);
        let replace = Command::PutConnector {
            connector: connector("mqtt_1", 1884),
        };
        assert!(state.apply(3, &replace).changed);
        assert_eq!(state.connectors.len(), 1);
        assert_eq!(state.connectors["mqtt_1"].params["port"], 1884);
    }
}
