//! Field dialects: where a foreign implementation's answers differ from the reference wire
//! types, a profile's `[dialect."<path>"]` table says where to read each field, and the probe
//! rewrites the answer before parsing it. Extra fields need no rule: parsing ignores them.
//!
//! ```toml
//! [dialect."/raft/metrics"]
//! last_applied = "last_applied.index"   # a dotted path into the answer
//! membership = "membership:ids"         # the integers of a string's first {...}
//! [dialect."/api/v1/cluster/workers"]
//! "workers[].status" = "workers[].state:lowercase"   # per element of an array
//! [dialect."/health"]
//! connectors = "=0"                     # a JSON literal, for a field the answer lacks
//! [dialect."POST /api/v1/cluster/connectors"]
//! "params.port" = "params.port:string"  # rules on a request body the harness sends
//! ```
//! A literal stands in only for fields the harness reports and never judges by; a field a
//! verdict depends on is left missing, so the step fails saying the answer lacks it.

use std::collections::BTreeMap;

use serde_json::Value;

/// Rules per path template (`{x}` matches one segment).
pub type Dialect = BTreeMap<String, BTreeMap<String, String>>;

/// The rules for the answers of `url`'s path, if any.
pub fn rules_for<'a>(dialect: &'a Dialect, url: &str) -> Option<&'a BTreeMap<String, String>> {
    rules_with(dialect, "", url)
}

/// The rules for a request body POSTed to `url` (keys `POST /path`), if any.
pub fn request_rules_for<'a>(
    dialect: &'a Dialect,
    url: &str,
) -> Option<&'a BTreeMap<String, String>> {
    rules_with(dialect, "POST ", url)
}

fn rules_with<'a>(
    dialect: &'a Dialect,
    prefix: &str,
    url: &str,
) -> Option<&'a BTreeMap<String, String>> {
    let path = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
    let path = path.split('?').next().unwrap_or(path);
    dialect
        .iter()
        .find(|(key, _)| {
            key.strip_prefix(prefix)
                .is_some_and(|t| t.starts_with('/') && matches(t, path))
        })
        .map(|(_, rules)| rules)
}

fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}')) || t == p)
}

/// Apply `rules` to `answer`: each target field gets the value its source names (a missing
/// source leaves the target as it was).
pub fn apply(rules: &BTreeMap<String, String>, answer: &mut Value) {
    for (target, source) in rules {
        if let Some(literal) = source.strip_prefix('=') {
            let Ok(v) = serde_json::from_str::<Value>(literal) else {
                continue;
            };
            set_all(answer, target, &v);
            continue;
        }
        let (source, conversion) = source.split_once(':').unwrap_or((source, ""));
        match (target.split_once("[]."), source.split_once("[].")) {
            (Some((t_arr, t_field)), Some((s_arr, s_field))) if t_arr == s_arr => {
                if let Some(items) = lookup_mut(answer, t_arr).and_then(Value::as_array_mut) {
                    for item in items {
                        if let Some(v) = lookup(item, s_field).map(|v| convert(v, conversion)) {
                            set(item, t_field, v);
                        }
                    }
                }
            }
            _ => {
                if let Some(v) = lookup(answer, source).map(|v| convert(v, conversion)) {
                    set(answer, target, v);
                }
            }
        }
    }
}

/// Set `target` (with `[]` for every element of an array, at any depth) to `new`.
fn set_all(v: &mut Value, target: &str, new: &Value) {
    match target.split_once("[].") {
        Some((arr, rest)) => {
            if let Some(items) = lookup_mut(v, arr).and_then(Value::as_array_mut) {
                for item in items {
                    set_all(item, rest, new);
                }
            }
        }
        None => set(v, target, new.clone()),
    }
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn lookup_mut<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.').try_fold(v, |v, k| v.get_mut(k))
}

fn set(v: &mut Value, path: &str, new: Value) {
    let mut keys: Vec<&str> = path.split('.').collect();
    let Some(last) = keys.pop() else { return };
    let mut at = v;
    for k in keys {
        if !at.get(k).is_some_and(Value::is_object) {
            if let Some(obj) = at.as_object_mut() {
                obj.insert(k.to_string(), Value::Object(Default::default()));
            }
        }
        match at.get_mut(k) {
            Some(next) => at = next,
            None => return,
        }
    }
    if let Some(obj) = at.as_object_mut() {
        obj.insert(last.to_string(), new);
    }
}

fn convert(v: &Value, conversion: &str) -> Value {
    match conversion {
        // `... Membership { configs: [{1, 2, 3}], ... }` → [1, 2, 3]: the first set after
        // `configs: [`, else the first `{...}` of digits.
        "ids" => {
            let s = v.as_str().unwrap_or_default();
            let from = s.find("configs: [").map_or(0, |i| i + "configs: [".len());
            let rest = &s[from..];
            let inner = rest
                .find('{')
                .and_then(|a| rest[a + 1..].find('}').map(|b| &rest[a + 1..a + 1 + b]))
                .unwrap_or("");
            Value::Array(
                inner
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .map(Value::from)
                    .collect(),
            )
        }
        "string" => match v {
            Value::String(_) => v.clone(),
            other => Value::from(other.to_string()),
        },
        "lowercase" => v
            .as_str()
            .map_or_else(|| v.clone(), |s| Value::from(s.to_lowercase())),
        _ => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_rewrite_the_fields_they_name() {
        let mut d = Dialect::new();
        d.insert(
            "/raft/metrics".into(),
            [
                ("last_applied".to_string(), "last_applied.index".to_string()),
                ("membership".to_string(), "membership:ids".to_string()),
            ]
            .into(),
        );
        d.insert(
            "/api/v1/cluster/pipeline-groups/{id}".into(),
            [(
                "placements[].status".to_string(),
                "placements[].state:lowercase".to_string(),
            )]
            .into(),
        );
        let rules = rules_for(&d, "http://h:1/raft/metrics").unwrap();
        let mut v = json!({
            "id": 1, "last_applied": {"leader_id": {"term": 2}, "index": 7},
            "membership": "StoredMembership { log_id: Some(LogId { index: 0 }), membership: Membership { configs: [{1, 2, 3}], nodes: {1: (), 2: ()} } }",
            "extra": true
        });
        apply(rules, &mut v);
        assert_eq!(v["last_applied"], 7);
        assert_eq!(v["membership"], json!([1, 2, 3]));
        let rules = rules_for(&d, "http://h:1/api/v1/cluster/pipeline-groups/c1?x=1").unwrap();
        let mut v = json!({"placements": [{"state": "Running"}, {"state": "Failed"}]});
        apply(rules, &mut v);
        apply(
            &[("placements[].epoch".to_string(), "=0".to_string())].into(),
            &mut v,
        );
        assert_eq!(v["placements"][1]["epoch"], 0);
        let mut t = json!({"groups": [{"pipelines": [{"name": "a"}, {"name": "b"}]}]});
        apply(
            &[("groups[].pipelines[].epoch".to_string(), "=0".to_string())].into(),
            &mut t,
        );
        assert_eq!(t["groups"][0]["pipelines"][1]["epoch"], 0);
        assert_eq!(v["placements"][0]["status"], "running");
        assert_eq!(v["placements"][1]["status"], "failed");
        assert!(rules_for(&d, "http://h:1/api/v1/cluster/pipeline-groups").is_none());
        d.insert(
            "POST /api/v1/cluster/connectors".into(),
            [
                ("params.port".to_string(), "params.port:string".to_string()),
                ("kind".to_string(), "=\"mqtt\"".to_string()),
            ]
            .into(),
        );
        assert!(rules_for(&d, "http://h:1/api/v1/cluster/connectors").is_none());
        let rules = request_rules_for(&d, "http://h:1/api/v1/cluster/connectors").unwrap();
        let mut body = json!({"params": {"host": "h", "port": 1883}});
        apply(rules, &mut body);
        assert_eq!(
            body,
            json!({"params": {"host": "h", "port": "1883"}, "kind": "mqtt"})
        );
    }
}
