//! `Target`: which node a step acts on (`coordinator-2`, `leader`, `worker-hosting:p`,
//! `home-of:w`, `@binding`), parsed from its text and resolved at run time by the runner
//! (`runner/targets.rs`); and `is_name`, the rule for binding, mark and timing names.

use std::fmt;

use serde::Deserialize;

/// Which node a step acts on; resolved at run time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum Target {
    /// `coordinator-N`
    Coordinator(u32),
    /// `worker-N`
    Worker(u32),
    /// `broker`
    Broker,
    /// `leader`: the coordinator the live coordinators agree leads now.
    Leader,
    /// `follower`: a live coordinator that is not the leader (the lowest-numbered one).
    Follower,
    /// `worker-hosting:<pipeline>`
    WorkerHosting(String),
    /// `home-of:<worker>`: the coordinator holding that worker's link.
    HomeOf(String),
    /// `@name`: a node bound by an earlier step of the same phase.
    Bound(String),
}

impl TryFrom<String> for Target {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const HELP: &str = "expected coordinator-N, worker-N, broker, leader, follower, \
                            worker-hosting:<pipeline>, home-of:<worker> or @name";
        let named = |prefix: &str| -> Option<Result<String, String>> {
            s.strip_prefix(prefix).map(|rest| {
                if is_name(rest) {
                    Ok(rest.to_string())
                } else {
                    Err(format!("unknown target '{s}': '{rest}' is not a name"))
                }
            })
        };
        if let Some(p) = named("worker-hosting:") {
            return p.map(Target::WorkerHosting);
        }
        if let Some(inner) = s.strip_prefix("home-of:") {
            return match inner.parse::<Target>() {
                Ok(Target::Worker(_) | Target::Bound(_) | Target::WorkerHosting(_)) => {
                    Ok(Target::HomeOf(inner.to_string()))
                }
                _ => Err(format!(
                    "unknown target '{s}': home-of: takes worker-N, worker-hosting:<pipeline> or @name"
                )),
            };
        }
        if let Some(b) = named("@") {
            return b.map(Target::Bound);
        }
        let numbered = |prefix: &str| -> Option<Result<u32, String>> {
            s.strip_prefix(prefix).map(|n| match n.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(format!(
                    "unknown target '{s}': '{n}' is not a node number ≥ 1"
                )),
            })
        };
        if let Some(n) = numbered("coordinator-") {
            return n.map(Target::Coordinator);
        }
        if let Some(n) = numbered("worker-") {
            return n.map(Target::Worker);
        }
        match s {
            "broker" => Ok(Target::Broker),
            "leader" => Ok(Target::Leader),
            "follower" => Ok(Target::Follower),
            _ => Err(format!("unknown target '{s}': {HELP}")),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Coordinator(n) => write!(f, "coordinator-{n}"),
            Target::Worker(n) => write!(f, "worker-{n}"),
            Target::Broker => f.write_str("broker"),
            Target::Leader => f.write_str("leader"),
            Target::Follower => f.write_str("follower"),
            Target::WorkerHosting(p) => write!(f, "worker-hosting:{p}"),
            Target::HomeOf(w) => write!(f, "home-of:{w}"),
            Target::Bound(b) => write!(f, "@{b}"),
        }
    }
}

/// Names for bindings, marks and timings: letters, digits, `_` and `-`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
