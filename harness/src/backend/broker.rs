//! The MQTT broker a run uses: the embedded one (`cluster broker`, started by the backend as a
//! node) or an external one named by `--mqtt-url mqtt://host:port`, which every node, the
//! publisher and the collector use and which the harness neither starts nor faults.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `mqtt://host:port` (port 1883 when left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
}

impl MqttUrl {
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
        let bad =
            |why: &str| format!("'{s}' is not an MQTT URL ({why}); expected mqtt://host:port");
        let rest = s
            .strip_prefix("mqtt://")
            .or_else(|| s.strip_prefix("tcp://"))
            .ok_or_else(|| bad("scheme must be mqtt://"))?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('@') {
            return Err(bad("no path or credentials"));
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
            "mqtt://u@h:1",
            "mqtt://h:1/x",
        ] {
            let e = bad.parse::<MqttUrl>().unwrap_err();
            assert!(e.contains(bad) && e.contains("mqtt://host:port"), "{e}");
        }
    }

    #[test]
    fn serializes_as_its_url() {
        let u: MqttUrl = "mqtt://h:2".parse().unwrap();
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, "\"mqtt://h:2\"");
        assert_eq!(serde_json::from_str::<MqttUrl>(&json).unwrap(), u);
    }
}
