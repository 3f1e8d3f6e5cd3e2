//! The MQTT broker a run uses: the embedded one (`cluster broker`, started by the backend as a
//! node) or an external one named by `--mqtt-url mqtt://[user:password@]host:port`, which every
//! node, the publisher and the collector use and which the harness neither starts nor faults.
//!
//! Credentials: the embedded broker gets the run's fresh worker secret (each worker logs in with
//! its token) and a fresh password for each of the publisher and the collector
//! ([`HarnessLogins`]); an external broker's account is the URL's, used by the publisher, the
//! collector and every worker alike.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An MQTT account. Never printed, serialized or written to a report.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttLogin {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for MqttLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MqttLogin({}, ***)", self.username)
    }
}

impl MqttLogin {
    pub fn pair(&self) -> (&str, &str) {
        (&self.username, &self.password)
    }
}

/// `mqtt://[user:password@]host:port` (port 1883 when left out). Shown and serialized without
/// its credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    #[serde(skip)]
    pub login: Option<MqttLogin>,
}

impl MqttUrl {
    /// The URL nodes are given: with its credentials.
    pub fn with_login(&self) -> String {
        match &self.login {
            Some(l) => format!(
                "mqtt://{}:{}@{}:{}",
                l.username, l.password, self.host, self.port
            ),
            None => self.to_string(),
        }
    }

    /// True when only processes on this machine's loopback can reach it (not containers).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl FromStr for MqttUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // Never echo a password back.
        let shown = match s.rsplit_once('@') {
            Some((_, host)) => format!("mqtt://…@{host}"),
            None => s.to_string(),
        };
        let bad = |why: &str| {
            format!(
                "'{shown}' is not an MQTT URL ({why}); expected mqtt://[user:password@]host:port"
            )
        };
        let rest = s
            .strip_prefix("mqtt://")
            .or_else(|| s.strip_prefix("tcp://"))
            .ok_or_else(|| bad("scheme must be mqtt://"))?;
        let (login, rest) = match rest.rsplit_once('@') {
            Some((login, rest)) => match login.split_once(':') {
                Some((u, p)) if !u.is_empty() && !p.is_empty() => (
                    Some(MqttLogin {
                        username: u.to_string(),
                        password: p.to_string(),
                    }),
                    rest,
                ),
                _ => return Err(bad("credentials must be user:password")),
            },
            None => (None, rest),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad("no path"));
        }
        // `[v6]:port`, `host:port` or `host`.
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && (!h.starts_with('[') || h.ends_with(']')) => {
                let port = p.parse::<u16>().map_err(|_| bad("port must be 1-65535"))?;
                (h, port)
            }
            _ => (rest, 1883),
        };
        if host.is_empty() || port == 0 {
            return Err(bad("host and a port 1-65535 are required"));
        }
        Ok(MqttUrl {
            host: host.to_string(),
            port,
            login,
        })
    }
}

impl TryFrom<String> for MqttUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<MqttUrl> for String {
    fn from(u: MqttUrl) -> String {
        u.to_string()
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)
    }
}

/// The accounts of the harness's publisher and collector: on the embedded broker, each its own
/// name and a fresh password per run; on an external broker, the URL's account for both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessLogins {
    pub publisher: MqttLogin,
    pub collector: MqttLogin,
}

/// User names of the harness's clients on the embedded broker; their client ids start with them.
pub const PUBLISHER_USER: &str = "harness-publisher";
pub const COLLECTOR_USER: &str = "harness-collector";

impl HarnessLogins {
    /// Fresh accounts, or the external broker's (its URL's, if it has one).
    pub fn generate(external: Option<&MqttUrl>) -> Option<HarnessLogins> {
        let own = |user: &str| MqttLogin {
            username: user.to_string(),
            password: super::random_secret(),
        };
        match external {
            Some(url) => url.login.clone().map(|login| HarnessLogins {
                publisher: login.clone(),
                collector: login,
            }),
            None => Some(HarnessLogins {
                publisher: own(PUBLISHER_USER),
                collector: own(COLLECTOR_USER),
            }),
        }
    }

    /// The embedded broker's `VARPULIS_MQTT_CLIENTS` (`name:password,name:password`).
    pub fn broker_clients(&self) -> String {
        [&self.publisher, &self.collector]
            .map(|l| format!("{}:{}", l.username, l.password))
            .join(",")
    }
}

/// One line for the report: which broker carried the run's events.
pub fn describe(external: Option<&MqttUrl>) -> String {
    match external {
        Some(url) => format!("external, {url} (--mqtt-url; not started or faulted by the harness)"),
        None => "embedded rumqttd (`cluster broker`), started by the harness".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mqtt_urls_and_refuses_the_rest() {
        let u: MqttUrl = "mqtt://127.0.0.1:18830".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 18830));
        assert!(u.is_loopback());
        assert_eq!(u.to_string(), "mqtt://127.0.0.1:18830");
        let u: MqttUrl = "mqtt://broker.lan".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("broker.lan", 1883));
        assert!(!u.is_loopback());
        let u: MqttUrl = "mqtt://[::1]:1884/".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 1884));
        assert!(u.is_loopback());
        for bad in [
            "127.0.0.1:1883",
            "http://h:1",
            "mqtt://:1883",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://h:1/x",
        ] {
            let e = bad.parse::<MqttUrl>().unwrap_err();
            assert!(e.contains(bad) && e.contains("host:port"), "{e}");
        }
        let e = "mqtt://u@h:1".parse::<MqttUrl>().unwrap_err();
        assert!(e.contains("user:password"), "{e}");
        let u: MqttUrl = "mqtt://user:s3cret@h:2".parse().unwrap();
        assert_eq!(u.login.as_ref().map(|l| l.pair()), Some(("user", "s3cret")));
        assert_eq!(u.to_string(), "mqtt://h:2", "shown without credentials");
        assert_eq!(u.with_login(), "mqtt://user:s3cret@h:2");
        assert!(!format!("{u:?}").contains("s3cret"));
        let e = "mqtt://user:s3cret@h:0".parse::<MqttUrl>().unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn secrets_are_fresh_and_tokens_match_the_cluster() {
        assert_ne!(super::super::random_secret(), super::super::random_secret());
        let a = HarnessLogins::generate(None).unwrap();
        assert_eq!(a.publisher.username, PUBLISHER_USER);
        assert_eq!(a.collector.username, COLLECTOR_USER);
        assert_ne!(a.publisher.password, a.collector.password);
        assert_eq!(a.broker_clients().matches(',').count(), 1);
        assert!(!format!("{a:?}").contains(&a.publisher.password));
        let url: MqttUrl = "mqtt://u:p@h:1".parse().unwrap();
        let c = HarnessLogins::generate(Some(&url)).unwrap();
        assert_eq!(
            (c.publisher.pair(), c.collector.pair()),
            (("u", "p"), ("u", "p"))
        );
        let anonymous: MqttUrl = "mqtt://h:1".parse().unwrap();
        assert_eq!(HarnessLogins::generate(Some(&anonymous)), None);
    }

    #[test]
    fn serializes_as_its_url() {
        let u: MqttUrl = "mqtt://h:2".parse().unwrap();
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, "\"mqtt://h:2\"");
        assert_eq!(serde_json::from_str::<MqttUrl>(&json).unwrap(), u);
    }
}
