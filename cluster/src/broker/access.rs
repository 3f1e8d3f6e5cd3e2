//! Who may connect to the broker, and under which client ids.
//!
//! Two kinds of principal, both checked on the CONNECT's username and password:
//! - a **worker**: username = its id, password = [`crate::auth::worker_token`] of the cluster's
//!   worker secret and that id. It may use only pipeline sessions (client ids starting
//!   [`PIPELINE_SESSION_PREFIX`]), so it cannot take over another client's session.
//! - a **client** configured by name (the harness's publisher and collector, a dashboard, ...):
//!   it may use only client ids that start with its own name and never a pipeline session, so
//!   it cannot take over, or wipe with a clean-session CONNECT, a pipeline's session.
//!
//! The bound is the worker, not the pipeline's current owner: any worker of the cluster may
//! open any pipeline session (ARCHITECTURE.md, "The broker's credentials").

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every pipeline's session id starts with this (`varpulis~group~pipeline`, and its output
/// connection's `…:out`); only workers may use such ids.
pub const PIPELINE_SESSION_PREFIX: &str = "varpulis~";

/// Longest client name: as long as a worker id may be.
const MAX_NAME_LEN: usize = 64;

/// The broker's credentials: the worker secret (workers' tokens are derived from it) and the
/// named clients with their passwords. Never printed.
#[derive(Clone)]
pub struct BrokerAuth {
    worker_secret: Option<String>,
    /// Name → password.
    clients: BTreeMap<String, String>,
}

impl std::fmt::Debug for BrokerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerAuth")
            .field("worker_secret", &self.worker_secret.as_ref().map(|_| "set"))
            .field("clients", &self.clients.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Who connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Worker(String),
    Client(String),
}

/// Why a CONNECT was refused (the broker answers CONNACK 5, not authorized, for each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no username and password")]
    NoCredentials,
    #[error("'{0}' is neither a client with that password nor a worker with a valid token")]
    BadCredentials(String),
    #[error("client '{name}' may not use pipeline session '{client_id}' (workers only)")]
    PipelineSession { name: String, client_id: String },
    #[error("client '{name}' may use only client ids starting with its name, not '{client_id}'")]
    ForeignClientId { name: String, client_id: String },
    #[error(
        "worker '{worker}' may use only pipeline sessions ({PIPELINE_SESSION_PREFIX}…), not '{client_id}'"
    )]
    NotAPipelineSession { worker: String, client_id: String },
}

/// `NAME:PASSWORD` (the broker's `--mqtt-client`): a name of 1-64 of `[A-Za-z0-9_.-]`, a
/// non-empty password (which may contain `:`).
pub fn parse_client(s: &str) -> Result<(String, String), String> {
    let (name, password) = s
        .split_once(':')
        .ok_or_else(|| "expected NAME:PASSWORD".to_string())?;
    check_name(name)?;
    if password.is_empty() {
        return Err(format!("client '{name}': empty password"));
    }
    Ok((name.to_string(), password.to_string()))
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "client name '{name}' must be 1-{MAX_NAME_LEN} of [A-Za-z0-9_.-]"
        ))
    }
}

impl BrokerAuth {
    /// At least one of a worker secret and a client; client names valid and none a prefix of
    /// another (a client may use the ids that start with its name: `pub` would own `publisher…`).
    pub fn new(
        worker_secret: Option<String>,
        clients: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<BrokerAuth> {
        if worker_secret.as_deref() == Some("") {
            anyhow::bail!("broker: the worker secret is empty");
        }
        let mut map = BTreeMap::new();
        for (name, password) in clients {
            check_name(&name).map_err(|e| anyhow::anyhow!("broker: {e}"))?;
            if password.is_empty() {
                anyhow::bail!("broker: client '{name}' has an empty password");
            }
            if map.insert(name.clone(), password).is_some() {
                anyhow::bail!("broker: client '{name}' is configured twice");
            }
        }
        let names: Vec<&String> = map.keys().collect();
        // Sorted: a name that prefixes another sorts right before some name it prefixes.
        for pair in names.windows(2) {
            if pair[1].starts_with(pair[0].as_str()) {
                anyhow::bail!(
                    "broker: client name '{}' is a prefix of '{}' (it could use the other's client ids)",
                    pair[0],
                    pair[1]
                );
            }
        }
        if worker_secret.is_none() && map.is_empty() {
            anyhow::bail!("broker: no credentials (a worker secret or at least one client)");
        }
        Ok(BrokerAuth {
            worker_secret,
            clients: map,
        })
    }

    /// A configured client more, for the broker's own use (its readiness probe).
    pub(super) fn with_client(mut self, name: &str, password: &str) -> anyhow::Result<Self> {
        let clients = std::mem::take(&mut self.clients)
            .into_iter()
            .chain(std::iter::once((name.to_string(), password.to_string())));
        BrokerAuth::new(self.worker_secret, clients)
    }

    /// Whether a CONNECT with `client_id` and these credentials may proceed, and as whom.
    pub fn check(
        &self,
        client_id: &str,
        login: Option<(&str, &str)>,
    ) -> Result<Principal, Refusal> {
        let Some((username, password)) = login else {
            return Err(Refusal::NoCredentials);
        };
        let pipeline_session = client_id.starts_with(PIPELINE_SESSION_PREFIX);
        if let Some(expected) = self.clients.get(username) {
            if same_secret(expected, password) {
                let name = username.to_string();
                let client_id = client_id.to_string();
                return if pipeline_session {
                    Err(Refusal::PipelineSession { name, client_id })
                } else if !client_id.starts_with(&name) {
                    Err(Refusal::ForeignClientId { name, client_id })
                } else {
                    Ok(Principal::Client(name))
                };
            }
        }
        if let Some(secret) = &self.worker_secret {
            if crate::auth::worker_token_valid(secret, username, password) {
                let worker = username.to_string();
                return if pipeline_session {
                    Ok(Principal::Worker(worker))
                } else {
                    Err(Refusal::NotAPipelineSession {
                        worker,
                        client_id: client_id.to_string(),
                    })
                };
            }
        }
        Err(Refusal::BadCredentials(username.to_string()))
    }
}

/// Constant time, length included: both sides are hashed to 32 bytes first.
fn same_secret(expected: &str, presented: &str) -> bool {
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(presented.as_bytes());
    bool::from(a.ct_eq(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::worker_token;

    fn auth() -> BrokerAuth {
        BrokerAuth::new(
            Some("s".into()),
            [
                ("harness-pub".to_string(), "p1".to_string()),
                ("harness-col".to_string(), "p2".to_string()),
            ],
        )
        .unwrap()
    }

    #[test]
    fn workers_get_pipeline_sessions_and_clients_their_own_ids() {
        let a = auth();
        let t1 = worker_token("s", "worker-1");
        assert_eq!(
            a.check("varpulis~g~p", Some(("worker-1", &t1))),
            Ok(Principal::Worker("worker-1".into()))
        );
        assert_eq!(
            a.check("varpulis~g~p:out", Some(("worker-1", &t1))),
            Ok(Principal::Worker("worker-1".into()))
        );
        assert_eq!(
            a.check("harness-pub-7", Some(("harness-pub", "p1"))),
            Ok(Principal::Client("harness-pub".into()))
        );
        let refused = [
            ("varpulis~g~p", None),
            ("varpulis~g~p", Some(("worker-2", t1.as_str()))),
            ("varpulis~g~p", Some(("worker-1", "nope"))),
            ("varpulis~g~p", Some(("harness-pub", "p1"))),
            ("harness-pub-7", Some(("worker-1", t1.as_str()))),
            ("harness-col-7", Some(("harness-pub", "p1"))),
            ("harness-pub-7", Some(("harness-pub", "p2"))),
            ("", Some(("harness-pub", "p1"))),
        ];
        for (id, login) in refused {
            assert!(a.check(id, login).is_err(), "{id} {login:?}");
        }
        assert_eq!(
            a.check("x", Some(("worker-2", &t1))),
            Err(Refusal::BadCredentials("worker-2".into()))
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(BrokerAuth::new(None, []).is_err());
        assert!(BrokerAuth::new(Some(String::new()), []).is_err());
        let e = BrokerAuth::new(
            None,
            [("pub".into(), "a".into()), ("publisher".into(), "b".into())],
        )
        .unwrap_err();
        assert!(e.to_string().contains("prefix"), "{e}");
        assert!(BrokerAuth::new(None, [("a~b".into(), "a".into())]).is_err());
        assert!(BrokerAuth::new(None, [("a".into(), String::new())]).is_err());
        assert_eq!(parse_client("n:p:q"), Ok(("n".into(), "p:q".into())));
        assert!(parse_client("n").is_err());
        assert!(parse_client("n:").is_err());
        assert!(parse_client(":p").is_err());
        assert!(!format!("{:?}", auth()).contains("p1"));
    }
}
