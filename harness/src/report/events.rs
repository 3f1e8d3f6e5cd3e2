//! The "Event accounting" section of `results.md`: how events were counted and drained, the
//! paced runs' achieved rates, and the run-wide tally with every late arrival.

use std::fmt::Write;

use crate::check::{Tallies, Tally};
use crate::record::RunData;
use crate::traffic::collector::DRAIN_BOUND;

pub fn section(data: &RunData) -> String {
    let mut s = String::new();
    if data.trials.iter().all(|t| t.check.is_none()) {
        return s;
    }
    let _ = writeln!(s, "## Event accounting\n");
    let _ = writeln!(
        s,
        "Every publish (invoked, acknowledged or not) and every arrival on the output topic (seq, \
         copy, time, topic, which fields were missing or changed) is in the run's history \
         (`run.json`, `history`); the counts are computed from it by pure checkers, per seq, never \
         netted. A trial's verdict waits for a drain: no arrival for {} ms (monotonic clock, at \
         most {} s). The run ends with a final drain{}; then every verdict is re-read from the \
         history, and every arrival recorded after a trial's verdict that names one of its seqs is \
         charged to that trial, whenever it came, and fails it.\n",
        data.config.drain_quiet_ms,
        DRAIN_BOUND.as_secs(),
        match &data.final_drain {
            Some(d) => format!(" ({d})"),
            None => String::new(),
        }
    );
    let drains: Vec<u64> = data
        .trials
        .iter()
        .filter_map(|t| t.check.as_ref().map(|c| c.drain_us))
        .filter(|&us| us > 0)
        .collect();
    if let Some(max) = drains.iter().max() {
        let _ = writeln!(
            s,
            "Drains before verdicts: {} ms in total over {} trials, at most {} ms in one.\n",
            drains.iter().sum::<u64>() / 1000,
            drains.len(),
            max / 1000
        );
    }
    let _ = writeln!(
        s,
        "Undecodable arrivals (no seq in the payload), run-wide: {}.\n",
        data.history.undecodable.len()
    );
    paced(&mut s, data);
    if let Some(tally) = &data.tally {
        tally_table(&mut s, data, tally);
    }
    s
}

fn paced(s: &mut String, data: &RunData) {
    let rows: Vec<String> = data
        .trials
        .iter()
        .flat_map(|t| {
            data.paced_runs(t).into_iter().map(move |p| {
                format!(
                    "| {} | {}/{} | {}/s | {:.1}/s | {} | {:.3} s |",
                    t.id,
                    t.trial,
                    t.trials,
                    p.requested_per_s,
                    p.achieved_per_s(),
                    p.sent,
                    p.elapsed_us as f64 / 1e6
                )
            })
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(s, "### Paced traffic\n");
    let _ = writeln!(
        s,
        "| Phase | Trial | Requested | Achieved | Events sent | Elapsed |\n|---|---|---|---|---|---|"
    );
    for row in rows {
        let _ = writeln!(s, "{row}");
    }
    let _ = writeln!(
        s,
        "\nAchieved = events handed to the MQTT client / time from the run's first tick to its \
         stop, on a monotonic clock.\n"
    );
}

fn tallies(t: &Tallies) -> String {
    format!(
        "{}/{} delivered, {} lost, {} dup, {} unexp, {} unknown, {} malformed",
        t.delivered, t.expected, t.lost, t.duplicated, t.unexpected, t.unknown, t.malformed
    )
}

fn tally_table(s: &mut String, data: &RunData, tally: &Tally) {
    let _ = writeln!(s, "### Run-wide tally (after the final drain)\n");
    let _ = writeln!(
        s,
        "| Phase | Trial | At its verdict | After the final drain | Late arrivals |\n|---|---|---|---|---|"
    );
    for t in &tally.trials {
        let trials = data.trials.get(t.index).map_or(1, |r| r.trials);
        let _ = writeln!(
            s,
            "| {} | {}/{trials} | {} | {} | {} |",
            t.phase,
            t.trial,
            tallies(&t.judged),
            tallies(&t.at_end),
            t.late_total
        );
    }
    let total = &tally.total;
    let _ = writeln!(
        s,
        "| run | all | | {}, {} undecodable | {} outside every trial |\n",
        tallies(total),
        total.undecodable,
        tally.outside_total
    );
    let findings: Vec<String> = tally
        .trials
        .iter()
        .flat_map(|t| {
            t.findings
                .iter()
                .map(move |f| format!("- phase {} [{}]: {f}", t.phase, t.trial))
        })
        .chain(tally.findings.iter().map(|f| format!("- run: {f}")))
        .collect();
    if findings.is_empty() {
        let _ = writeln!(
            s,
            "No late arrival, and every verdict agrees with the history.\n"
        );
    } else {
        let _ = writeln!(s, "**Findings** (each fails its phase, or the run):\n");
        for f in findings {
            let _ = writeln!(s, "{f}");
        }
        let _ = writeln!(s);
    }
}
