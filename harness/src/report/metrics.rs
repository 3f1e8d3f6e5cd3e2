//! results.md's per-phase metrics: what changed on each node's `/metrics` over the trial, what
//! the harness checked against its own observation, and any contradiction (which failed it).

use std::fmt::Write;

use crate::metrics::MetricsCheck;

/// Series that change on every scrape or sweep and say nothing about the phase.
const NOISE: [&str; 4] = [
    "_sum",
    "start_time_seconds",
    "lease_remaining_seconds",
    "health_sweep_",
];

/// The markdown block for one trial's metrics (empty when none were taken).
pub fn block(check: &MetricsCheck) -> String {
    let mut s = String::new();
    let contradictions = if check.contradictions.is_empty() {
        "none".to_string()
    } else {
        check.contradictions.join("; ")
    };
    let _ = writeln!(
        s,
        "Metrics (every live node's `/metrics`, scraped before and after the phase): contradictions: {contradictions}."
    );
    if !check.checked.is_empty() {
        let _ = writeln!(
            s,
            "Checked against the harness's observation: {}.",
            check.checked.join("; ")
        );
    }
    if !check.restarted.is_empty() {
        let _ = writeln!(
            s,
            "Restarted during the phase (counters start again; not compared): {}.",
            check.restarted.join(", ")
        );
    }
    if !check.unreadable.is_empty() {
        let _ = writeln!(s, "Not scraped: {}.", check.unreadable.join("; "));
    }
    let rows: Vec<(String, String)> = check
        .deltas
        .iter()
        .filter_map(|(node, series)| {
            let changes: Vec<String> = series
                .iter()
                .filter(|(name, _)| !NOISE.iter().any(|n| name.contains(n)))
                .map(|(name, (before, after))| {
                    let short = name
                        .trim_start_matches("varpulis_cluster_")
                        .trim_start_matches("varpulis_worker_");
                    match before {
                        Some(b) => format!("`{short}` {} → {}", num(*b), num(*after)),
                        None => format!("`{short}` {}", num(*after)),
                    }
                })
                .collect();
            let node = if check.restarted.contains(node) {
                format!("{node} (restarted: another process before)")
            } else {
                node.clone()
            };
            (!changes.is_empty()).then(|| (node, changes.join(", ")))
        })
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(s, "\n| Node | Changed over the phase |\n|---|---|");
        for (node, changes) in rows {
            let _ = writeln!(s, "| {node} | {} |", changes.replace('|', "\\|"));
        }
    }
    s
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}
