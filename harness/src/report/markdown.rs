//! `results.md`: the seed's result block, a results table, percentiles, configuration and how
//! each figure was measured.

use std::fmt::Write;

use crate::record::RunData;

const TITLE: &str = "E2E Scaling + Raft Coordinator HA Test Results";
const RULE: &str = "============================================================";
/// Width of `Phase N: Name ....` before the status, as in the seed.
const LABEL_WIDTH: usize = 45;

/// The seed-shaped block: one line per trial plus its detail line, then the result count.
pub fn results_block(data: &RunData) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{RULE}\n=== {TITLE} ===");
    for (index, t) in data.trials.iter().enumerate() {
        let mut label = format!("Phase {}: {} ", t.id, t.name);
        if t.trials > 1 {
            label = format!("Phase {}: {} [{}/{}] ", t.id, t.name, t.trial, t.trials);
        }
        let dots = LABEL_WIDTH.saturating_sub(label.chars().count()).max(3);
        let _ = writeln!(
            s,
            "{label}{} {} ({:.1}s)",
            ".".repeat(dots),
            t.status,
            t.duration_us as f64 / 1e6
        );
        if !t.details.is_empty() {
            let _ = writeln!(s, "{}", t.details);
        }
        if let Some(e) = &t.error {
            let _ = writeln!(s, "  error: {e}");
        }
        for late in data
            .tally
            .iter()
            .flat_map(|tally| &tally.trials)
            .filter(|l| l.index == index)
            .flat_map(|l| &l.findings)
        {
            let _ = writeln!(s, "  late: {late}");
        }
    }
    let _ = writeln!(s, "{RULE}");
    let _ = writeln!(
        s,
        "RESULT: {}/{} phases passed{}",
        data.passed(),
        data.trials.len(),
        if data.interrupted {
            " (run interrupted)"
        } else {
            ""
        }
    );
    for f in data.tally.iter().flat_map(|t| &t.findings) {
        let _ = writeln!(s, "RUN-WIDE: {f}");
    }
    let _ = writeln!(s, "{RULE}");
    s
}

pub fn results_markdown(data: &RunData) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {TITLE}\n");
    let _ = writeln!(
        s,
        "Run `{}` on the **{}** backend, seed {}, started {}. Reproduce with:\n\n```\n{}\n```\n",
        data.run_id, data.backend, data.seed, data.started_at, data.command
    );
    if let Some(security) = &data.config.security {
        let _ = writeln!(s, "**Security**: {security}.\n");
    }
    let _ = writeln!(s, "```\n{}```\n", results_block(data));

    let _ = writeln!(s, "## Results table\n");
    let _ = writeln!(s, "| Phase | Test | Trial | Result | Duration | Delivered | Lost | Duplicated | Unexpected | Unknown | Malformed | Details |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for t in &data.trials {
        let details = match &t.error {
            Some(e) => format!("{} — {}", t.details, e),
            None => t.details.clone(),
        };
        let counts = match &t.events {
            Some(c) => format!(
                "{}/{} | {} | {} | {} | {} | {}",
                c.delivered,
                c.expected,
                c.lost,
                duplicated_cell(c),
                c.unexpected,
                c.unknown,
                c.malformed
            ),
            None => "– | – | – | – | – | –".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {}/{} | {} | {:.1}s | {counts} | {} |",
            t.id,
            t.name,
            t.trial,
            t.trials,
            t.status,
            t.duration_us as f64 / 1e6,
            escape(&details)
        );
    }
    let total_s: f64 = data.trials.iter().map(|t| t.duration_us as f64 / 1e6).sum();
    let floor_s: f64 = data.trials.iter().map(|t| t.floor_us as f64 / 1e6).sum();
    let rest_s = (total_s - floor_s).max(0.0);
    let _ = writeln!(
        s,
        "\n**Suite time**: {total_s:.1} s of phase time, of which {floor_s:.1} s is protocol floor and {rest_s:.1} s ({:.1} %) everything else.\n\n\
         The floor is, per trial, the union of every `hold` window (traffic kept flowing on purpose) and, for each measured \
         figure that declares one, the figure's interval up to the upper end of the floor its configuration sets (grace \
         periods, election lease and randomized timeouts), counted from the figure's start: an election or failover slower \
         than its configuration allows shows up as time above the floor. \
         Everything else is starting nodes, publishing and draining bursts, restarts and rejoins, and the harness's own \
         polling (every wait returns at the first poll, 20 ms apart, that sees its condition).\n",
        if total_s > 0.0 { 100.0 * rest_s / total_s } else { 0.0 }
    );

    let _ = write!(s, "{}", super::events::section(data));

    let figures = super::figures(data);
    if !figures.is_empty() {
        let _ = writeln!(s, "## Timings\n");
        let _ = writeln!(
            s,
            "Each figure is keyed by the phase that measured it (`phase.figure`); a figure measured by polling \
             instead of event-log timestamps is kept apart (`(poll)`). The floor is what the run's configuration alone \
             demands (its expression, evaluated for this run); `p50 vs floor` is the median against the floor's upper end.\n"
        );
        let _ = writeln!(s, "| Figure | Method | Resolution | n | min | p50 | p90 | p99 | max | Floor (configuration) | p50 vs floor |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for f in &figures {
            let p = &f.p;
            let floor = match &f.floor {
                Some(fl) if fl.lo_us == fl.hi_us => {
                    format!("{:.1} ms = `{}`", fl.lo_us as f64 / 1000.0, fl.expr)
                }
                Some(fl) => format!(
                    "{:.1}–{:.1} ms = `{}`",
                    fl.lo_us as f64 / 1000.0,
                    fl.hi_us as f64 / 1000.0,
                    fl.expr
                ),
                None => "–".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | ≤ {} ms | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {floor} | {} |",
                f.key,
                f.method,
                trim_ms(f.resolution_ms),
                p.n,
                p.min,
                p.p50,
                p.p90,
                p.p99,
                p.max,
                f.vs_floor()
            );
        }
        let _ = writeln!(s, "\nPercentiles from an HDR histogram of the samples (µs, 3 significant figures); min and max exact. \
            Resolution: how far a measured end may lie from the true instant (1 ms for an event-log timestamp, the gap \
            between two polls for a polled end, 0 for the harness's own action), summed over both ends; the worst sample's.\n");
        let _ = writeln!(s, "### How each figure was measured\n");
        for f in &figures {
            let _ = writeln!(
                s,
                "- **{}** (start → end): {}.",
                f.key,
                f.hows.join("; or ")
            );
        }
        let _ = writeln!(
            s,
            "\nMarks are instants on this machine's clock (read once, then advanced by the monotonic clock, so a clock step \
             cannot reorder them). A fault's mark on the process backend is taken as `kill(2)` returns \
             (the signal is delivered); on Docker it is taken when the engine call is issued, because the engine answers only \
             after its own cleanup (~100 ms), so Docker figures are upper bounds. A leader's mark is the earliest `leader_changed` event (ms resolution) in any live coordinator's event log \
             (`GET /api/v1/cluster/events`), falling back to the first poll that saw it (polls every {} ms, {} ms timeout, all nodes at once).\n",
            data.config.poll_interval_ms, data.config.probe_timeout_ms
        );
    }

    s.push_str(&super::plots::markdown(data));
    let _ = writeln!(s, "## Phase details\n");
    for t in &data.trials {
        let suffix = if t.trials > 1 {
            format!(" (trial {}/{})", t.trial, t.trials)
        } else {
            String::new()
        };
        let _ = writeln!(s, "### Phase {}: {}{suffix} — {}\n", t.id, t.name, t.status);
        if !t.description.is_empty() {
            let _ = writeln!(s, "{}\n", t.description.trim());
        }
        for st in &t.steps {
            let mark = if st.ok { "ok" } else { "FAILED" };
            let _ = writeln!(
                s,
                "- +{:.3}s `{}` ({:.0} ms, {mark}): {}",
                st.offset_us as f64 / 1e6,
                st.summary,
                st.duration_us as f64 / 1000.0,
                st.note
            );
        }
        let _ = writeln!(s);
        if let Some(m) = &t.metrics {
            let _ = writeln!(s, "{}", super::metrics::block(m));
        }
    }

    let c = &data.config;
    let _ = writeln!(s, "## Configuration\n");
    let _ = writeln!(s, "| Parameter | Value |\n|---|---|");
    let _ = writeln!(s, "| Backend | {} |", data.backend);
    let _ = writeln!(
        s,
        "| Coordinators | {} (quorum {}) |",
        c.coordinators,
        c.coordinators / 2 + 1
    );
    let _ = writeln!(s, "| Workers | {} |", c.workers);
    let _ = writeln!(s, "| Pipelines | {} |", c.pipelines);
    if let Some(p) = &c.profile {
        let _ = writeln!(s, "| Cluster profile | {p} |");
    }
    for f in &c.fallbacks {
        let _ = writeln!(s, "| Figures fall back | {f} |");
    }
    if let Some(broker) = &c.broker {
        let _ = writeln!(s, "| MQTT broker | {broker} |");
    }
    if let Some(security) = &c.security {
        let _ = writeln!(s, "| Security | {security} |");
    }
    let _ = writeln!(
        s,
        "| Raft heartbeat interval | {} ms |",
        c.raft.heartbeat_ms
    );
    let _ = writeln!(
        s,
        "| Raft election timeout | {}–{} ms |",
        c.raft.election_min_ms, c.raft.election_max_ms
    );
    // What the reference cluster is built of; a foreign profile's run does not say.
    if c.profile
        .as_deref()
        .is_none_or(|p| p.starts_with("reference:"))
    {
        let _ = writeln!(s, "| Raft log storage | redb on disk, fsynced |");
        let _ = writeln!(s, "| Raft transport | HTTP (reqwest) |");
    }
    let _ = writeln!(s, "| Harness poll interval | {} ms |", c.poll_interval_ms);
    let _ = writeln!(s, "| Probe timeout | {} ms |", c.probe_timeout_ms);
    let _ = writeln!(s, "| CPU cores | {} |", c.cpu_cores);
    let _ = writeln!(s, "| Harness version | {} |", c.harness_version);
    let _ = writeln!(s, "| Seed | {} |", data.seed);
    if let Some(d) = &c.detector {
        let _ = writeln!(s, "\n### Failure detection\n");
        let _ = writeln!(s, "| Layer | Setting | Catches |\n|---|---|---|");
        let _ = writeln!(s, "| WebSocket close | grace {} ms, then unhealthy unless the link was committed again | crash, kill |", d.grace_ms);
        let _ = writeln!(s, "| WebSocket ping deadline | ping every {} ms, dead after {} ms, then the grace | hung (SIGSTOP) process, partition |", d.ping_interval_ms, d.ping_dead_ms);
        let _ = writeln!(
            s,
            "| REST heartbeat | timeout {} ms (workers without a link) | no WebSocket |",
            d.rest_timeout_ms
        );
        let _ = writeln!(s, "| Leader liveness sweep | not reported alive by any coordinator for grace + ping deadline + 2 s | a worker whose link holder died with it |");
    }
    s
}

/// `20` for 20.0, `0.001` for 0.001: resolutions without noise.
fn trim_ms(ms: f64) -> String {
    let s = format!("{ms:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The duplicated count, with how many of them a worker's SIGKILL explains (at least once).
fn duplicated_cell(c: &crate::traffic::ledger::Counts) -> String {
    match c.at_crash.len() {
        0 => c.duplicated.to_string(),
        n => format!("{} ({n} at a worker's SIGKILL)", c.duplicated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RaftTimings;
    use crate::record::{RunSettings, Sample, Status, TrialRecord};

    #[test]
    fn block_has_the_seed_shape() {
        let config = RunSettings {
            coordinators: 3,
            poll_interval_ms: 20,
            probe_timeout_ms: 250,
            cpu_cores: 2,
            ..RunSettings::none(RaftTimings::SEED, 250)
        };
        let data = RunData {
            trials: vec![TrialRecord {
                slug: "coordinator-failover".into(),
                duration_us: 6_100_000,
                floor_us: 5_200_000,
                details: "old leader: node 1, new leader: node 2, election: 5.2s".into(),
                samples: vec![Sample {
                    name: "election_ms".into(),
                    value_us: 5_200_000,
                    how: "a → b".into(),
                    method: "event log".into(),
                    resolution_us: 1000,
                    floor: Some(crate::record::Floor {
                        expr: "lease + election_min - heartbeat .. lease + election_max + tick"
                            .into(),
                        lo_us: 4_000_000,
                        hi_us: 6_750_000,
                    }),
                }],
                ..TrialRecord::new("5", "Coordinator Failover (Raft)", 1, 1, Status::Pass)
            }],
            ..RunData::new("r", "process", config)
        };
        let block = results_block(&data);
        assert!(block.contains("Phase 5: Coordinator Failover (Raft) ........ PASS (6.1s)\nold leader: node 1, new leader: node 2, election: 5.2s\n"), "{block}");
        assert!(block.contains("RESULT: 1/1 phases passed"));
        let md = results_markdown(&data);
        assert!(
            md.contains(
                "| coordinator-failover.election_ms | event log | ≤ 1 ms | 1 | 5200.0 ms |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 4000.0–6750.0 ms = `lease + election_min - heartbeat .. lease + election_max + tick` | within |"),
            "{md}"
        );
    }
}
