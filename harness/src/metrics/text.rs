//! A reader of the Prometheus text exposition format (0.0.4): samples as `series → value`, the
//! series written canonically (`name{a="x",b="y"}`, labels sorted). The harness parses `/metrics`
//! itself: it reaches the cluster only over the network and imports none of its internals.

use std::collections::BTreeMap;

use anyhow::{bail, Context};

/// Every sample of `text`: canonical series → value. Comments and blank lines are skipped.
pub fn parse(text: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut samples = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = sample(line).with_context(|| format!("line {}: {line:?}", n + 1))?;
        samples.insert(series, value);
    }
    Ok(samples)
}

/// One sample line: canonical series and value (a trailing timestamp is ignored).
fn sample(line: &str) -> anyhow::Result<(String, f64)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .context("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        bail!("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = label_set(after)?;
        labels = parsed;
        rest = tail;
    }
    let value = rest.split_whitespace().next().context("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().with_context(|| format!("bad value {v:?}"))?,
    };
    labels.sort();
    Ok((series_key(name, &labels), value))
}

/// Labels up to the closing `}`; returns them and what follows.
fn label_set(mut s: &str) -> anyhow::Result<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').context("label without '='")?;
        let key = s[..eq].trim().to_string();
        let mut chars = s[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            bail!("label {key}: value not quoted");
        }
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in chars {
            if escaped {
                value.push(if c == 'n' { '\n' } else { c });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(eq + 1 + i + 1);
                break;
            } else {
                value.push(c);
            }
        }
        let end = end.with_context(|| format!("label {key}: unterminated value"))?;
        labels.push((key, value));
        s = &s[end..];
    }
}

/// `name{a="x",b="y"}` (just `name` without labels), values escaped as in the format.
pub fn series_key(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_labels_and_special_values() {
        let text = "# HELP x_total A counter.\n# TYPE x_total counter\n\
                    x_total{result=\"success\"} 3\n\
                    x_total{b=\"2\",a=\"q\\\"uo,te}\"} 1.5\n\
                    h_bucket{le=\"+Inf\"} 7 1700000000000\n\
                    plain 0\n";
        let s = parse(text).expect("parses");
        assert_eq!(s["x_total{result=\"success\"}"], 3.0);
        assert_eq!(
            s["x_total{a=\"q\\\"uo,te}\",b=\"2\"}"], 1.5,
            "labels sorted, escapes kept"
        );
        assert_eq!(s["h_bucket{le=\"+Inf\"}"], 7.0);
        assert_eq!(s["plain"], 0.0);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn bad_lines_are_errors_with_their_line() {
        let e = parse("ok 1\nbroken{a=\"x} 2\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        assert!(parse("novalue\n").is_err());
        assert!(parse("x{a=unquoted} 1\n").is_err());
    }
}
