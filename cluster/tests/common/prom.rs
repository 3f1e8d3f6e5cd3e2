//! Test support for the observability tests: reading `/metrics` (Prometheus text format) and
//! Debian's Prometheus tools (`promtool`, `prometheus`), which must be installed.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a Prometheus text exposition (comments skipped). Label values here never
/// hold `,` or `"` (ids are `[A-Za-z0-9_.-/]`), so a split is enough for a test.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("label k=v");
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: value
                    .parse()
                    .unwrap_or_else(|e| panic!("value in {line:?}: {e}")),
            }
        })
        .collect()
}

/// The value of `name` with exactly these labels (a subset match on the given ones).
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// The path of a Debian binary, or a panic naming the package that ships it.
pub fn debian_binary(name: &str, package: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .expect("run sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    assert!(
        found.status.success() && !path.is_empty(),
        "`{name}` is not installed: install the Debian package `{package}` \
         (apt-get install --no-install-recommends {package}); .ci/run does"
    );
    path
}

/// `promtool check metrics` on `text`: its exit code and everything it printed.
pub fn promtool_check(text: &str) -> (i32, String) {
    let promtool = debian_binary("promtool", "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), printed)
}
