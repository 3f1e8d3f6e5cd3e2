//! `scaling.md`, `scaling.csv` (one row per figure and point), `scaling-samples.csv` (one row per
//! sample) and `plots/scale-<curve>.{png,svg}`: a pure function of [`ScaleData`] (`scale.json`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::{Curve, Point, ScaleData};
use crate::report::plots::scaling::{median, CurvePlot, Series, SIZE};

pub const MARKDOWN: &str = "scaling.md";
pub const CSV: &str = "scaling.csv";
pub const SAMPLES_CSV: &str = "scaling-samples.csv";
pub const JSON: &str = "scale.json";

/// The throughput section of a scale run that has none recorded (an interrupted run, or one
/// from before it was part of `harness scale`).
pub const THROUGHPUT_PLACEHOLDER: &str = "Not measured in this scale run.";

/// `harness bench`'s markdown as a section of scaling.md: its headings one level down (its
/// title becomes a `###`), its relative links pointing into its run dir `rel`.
pub fn nest_throughput(markdown: &str, rel: &str) -> String {
    markdown
        .lines()
        .map(|line| {
            let line = line.replace("](plots/", &format!("]({rel}/plots/"));
            if line.starts_with('#') {
                format!("##{line}")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The figures each curve plots, in order.
pub fn figures(curve: Curve) -> &'static [&'static str] {
    match curve {
        Curve::Pipelines | Curve::Workers => &["detection_ms", "failover_ms"],
        Curve::Election => &["election_ms", "rejoin_ms"],
        Curve::Suite => &["suite_s"],
    }
}

fn x_label(curve: Curve) -> &'static str {
    match curve {
        Curve::Pipelines => "pipelines hosted by the killed worker",
        Curve::Workers => "workers (one killed)",
        Curve::Election => "entries committed before the leader is killed",
        Curve::Suite => "workers",
    }
}

fn title(curve: Curve) -> &'static str {
    match curve {
        Curve::Pipelines => "Worker failover against the pipelines it hosted",
        Curve::Workers => "Detection and failover against the number of workers",
        Curve::Election => "Election against the log's length",
        Curve::Suite => "Suite time against workers",
    }
}

/// How a curve's figures were measured (the plot's caption and the table's preamble).
fn how(curve: Curve) -> &'static str {
    match curve {
        Curve::Pipelines => "Phase 3 (worker failover, 100 events/s flowing) on 2 workers and 2N pipelines: deploy puts N on each, the worker hosting sensor_filter_1 is SIGKILLed. detection_ms: kill signal → the coordinators' event log records it unhealthy; failover_ms: kill signal → every pipeline it hosted reported running on the survivor (event log). Each trial a fresh cluster: a failover leaves all 2N pipelines on the survivor, so a second trial on the same cluster would kill a worker hosting 2N.",
        Curve::Workers => "Phase 3 (worker failover) at W workers and W pipelines (one each, so the killed worker hosts one): detection_ms and failover_ms as on the pipelines curve. Each trial a fresh cluster (on the same one, a later trial's victim could host two).",
        Curve::Election => "phases/election-after-log.toml: N connector writes committed through the leader (32 in flight, up to a log index of N: a later trial of the point writes none; snapshots every 1000 entries, the log purged behind them), then the leader SIGKILLed. election_ms: kill signal → the earliest moment a survivor recorded the new leader (event log); rejoin_ms: the old leader restarted → it answers as a follower (poll). Each point a fresh cluster.",
        Curve::Suite => "`--phases all` (phases 0-7) once at W workers and 3 pipelines: the sum of every trial's duration (the harness's clock, cluster start-up included).",
    }
}

/// Why each curve has its shape: what grows, and why (the mechanism, read from the code).
fn shape(curve: Curve) -> &'static str {
    match curve {
        Curve::Pipelines => "Detection is the link's close plus the grace timer, whatever the worker ran: flat by construction. Failover adds what grows with N: the leader's placement driver moving the N pipelines (one `move_pipelines` entry since the batch fix; one `move_pipeline` commit each, sequentially, before it), the survivor's reconciler starting N pipelines (two MQTT connections and a subscription each), and N `pipeline_running` entries proposed from the survivor's heartbeats, which the harness's mark waits for.",
        Curve::Workers => "Neither detection nor the moves depend on how many workers there are: a verdict is about one worker and the killed worker hosted one pipeline at every size; what grows with W is background load (W heartbeats and links per interval, W start-ups on 2 shared cores), which only shows as spread.",
        Curve::Election => "A vote compares the candidates' last log ids only, and a coordinator keeps its state in memory (rebuilt at start from the latest snapshot and the log after it), so the election should not grow with the log; what can grow is the restarted node's catch-up (rejoin_ms: a snapshot to load, at most 1000 entries to re-apply).",
        Curve::Suite => "The suite is mostly protocol time (grace periods, election timeouts, holds) plus start-up; more workers add their start-ups, their links to await and their pipelines' spread, so it grows gently with W.",
    }
}

fn points_of(data: &ScaleData, curve: Curve) -> Vec<&Point> {
    data.points
        .iter()
        .filter(|p| p.spec.curve == curve)
        .collect()
}

fn curves_of(data: &ScaleData) -> Vec<Curve> {
    let mut c: Vec<Curve> = data.points.iter().map(|p| p.spec.curve).collect();
    c.dedup();
    c
}

fn unit(figure: &str) -> &'static str {
    if figure.ends_with("_s") {
        "s"
    } else {
        "ms"
    }
}

fn cell(v: Option<&Vec<f64>>) -> String {
    match v.filter(|v| !v.is_empty()) {
        None => "–".into(),
        Some(v) => {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let m = median(v).unwrap_or(0.0);
            if v.len() == 1 {
                format!("{m:.1}")
            } else {
                format!("{m:.1} ({lo:.1}–{hi:.1})")
            }
        }
    }
}

/// A one-line summary of a point's medians, for the progress line.
pub fn point_summary(p: &Point) -> String {
    let parts: Vec<String> = figures(p.spec.curve)
        .iter()
        .map(|f| format!("{f} {}", cell(p.figures.get(*f))))
        .collect();
    parts.join(", ")
}

/// The growth of a figure's median from the first point to the last, in words.
fn growth(points: &[&Point], figure: &str) -> Option<String> {
    let first = points
        .iter()
        .find_map(|p| median(p.figures.get(figure)?).map(|m| (p.spec.size, m)))?;
    let last = points
        .iter()
        .rev()
        .find_map(|p| median(p.figures.get(figure)?).map(|m| (p.spec.size, m)))?;
    if first.0 == last.0 {
        return None;
    }
    let u = unit(figure);
    let per = (last.1 - first.1) / (last.0 as f64 - first.0 as f64);
    let per = if per.abs() >= 0.01 || per == 0.0 {
        format!("{per:+.3}")
    } else {
        format!("{per:+.2e}")
    };
    Some(format!(
        "{figure}: median {:.1} {u} at {} → {:.1} {u} at {} ({:+.1} %, {per} {u} per unit of size)",
        first.1,
        first.0,
        last.1,
        last.0,
        (last.1 / first.1.max(1e-9) - 1.0) * 100.0
    ))
}

/// The targets, measured (never asserted): failover at 300 ≤ grace + 1 s; election
/// after 100 k entries ≤ the empty log's + 100 ms.
fn targets(data: &ScaleData) -> Vec<String> {
    let mut out = Vec::new();
    let at = |curve: Curve, size: u64, figure: &str| {
        data.points
            .iter()
            .find(|p| p.spec.curve == curve && p.spec.size == size)
            .and_then(|p| median(p.figures.get(figure)?))
    };
    if let Some(f) = at(Curve::Pipelines, 300, "failover_ms") {
        let bound = data.timings.grace_ms as f64 + 1000.0;
        out.push(format!(
            "failover_ms at 300 pipelines: median {f:.1} ms against grace + 1 s = {bound:.0} ms: {}",
            if f <= bound { "met" } else { "missed" }
        ));
    }
    if let (Some(empty), Some(full)) = (
        at(Curve::Election, 0, "election_ms"),
        at(Curve::Election, 100_000, "election_ms"),
    ) {
        out.push(format!(
            "election_ms after 100 000 entries: median {full:.1} ms against the empty log's {empty:.1} ms + 100 ms = {:.1} ms: {}",
            empty + 100.0,
            if full <= empty + 100.0 { "met" } else { "missed" }
        ));
    }
    out
}

pub fn markdown(data: &ScaleData) -> String {
    let t = &data.timings;
    let mut s = String::new();
    let _ = writeln!(s, "# Scaling\n");
    let _ = writeln!(
        s,
        "Started {}; {} CPU core(s); command: `{}`.\n\nTimings of every point: heartbeat {} ms, election {}–{} ms, grace {} ms, ping interval {} ms, ping dead {} ms. Medians, with (min–max) over the trials; every sample is in {SAMPLES_CSV}, every point's own run (results.md, run.json) under its run directory.\n",
        data.started_at,
        data.cpu_cores,
        data.command,
        t.heartbeat_ms,
        t.election_min_ms,
        t.election_max_ms,
        t.grace_ms,
        t.ping_interval_ms,
        t.ping_dead_ms
    );
    let targets = targets(data);
    if !targets.is_empty() {
        let _ = writeln!(s, "## Targets (measured)\n");
        for line in targets {
            let _ = writeln!(s, "- {line}");
        }
        s.push('\n');
    }
    let throughput = data.throughput.as_deref().unwrap_or(THROUGHPUT_PLACEHOLDER);
    let _ = writeln!(s, "## Throughput\n\n{}\n", throughput.trim_end());
    for curve in curves_of(data) {
        let points = points_of(data, curve);
        let figs = figures(curve);
        let _ = writeln!(s, "## {}\n\n{}\n", title(curve), how(curve));
        let mut header = format!("| {} | workers | pipelines |", x_label(curve));
        let mut rule = String::from("|---:|---:|---:|");
        for f in figs {
            let _ = write!(header, " {f} ({}) |", unit(f));
            rule.push_str("---:|");
        }
        header.push_str(" trials passed | run |");
        rule.push_str("---:|---|");
        let _ = writeln!(s, "{header}\n{rule}");
        for p in &points {
            let mut row = format!(
                "| {} | {} | {} |",
                p.spec.size, p.spec.workers, p.spec.pipelines
            );
            for f in figs {
                let _ = write!(row, " {} |", cell(p.figures.get(*f)));
            }
            let _ = write!(row, " {}/{} | `{}` |", p.passed, p.trials, p.run_dir);
            let _ = writeln!(s, "{row}");
        }
        for p in points.iter().filter(|p| p.error.is_some()) {
            let _ = writeln!(
                s,
                "\nAt {} a trial failed: {}",
                p.spec.size,
                p.error.as_deref().unwrap_or_default()
            );
        }
        if let Some(fill) = fill_rates(&points) {
            let _ = writeln!(s, "\nFilling the log (fill_ms): {fill}.");
        }
        let stem = format!("scale-{}", curve.name());
        let _ = writeln!(
            s,
            "\n![{}](plots/{stem}.png) ([svg](plots/{stem}.svg))\n\n**Shape.** {}",
            title(curve),
            shape(curve)
        );
        let grown: Vec<String> = figs.iter().filter_map(|f| growth(&points, f)).collect();
        if !grown.is_empty() {
            let _ = writeln!(s, " Measured: {}.", grown.join("; "));
        }
        s.push('\n');
    }
    s
}

fn fill_rates(points: &[&Point]) -> Option<String> {
    let parts: Vec<String> = points
        .iter()
        .filter(|p| p.spec.size > 0)
        .filter_map(|p| {
            let ms = median(p.figures.get("fill_ms")?)?;
            Some(format!(
                "the log grown to {} entries in {:.1} s ({:.0} entries/s)",
                p.spec.size,
                ms / 1000.0,
                p.spec.size as f64 / (ms / 1000.0).max(1e-9)
            ))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `scaling.csv`: curve, size, shape, figure, n, median, min, max.
pub fn csv(data: &ScaleData) -> String {
    let mut s =
        String::from("curve,size,workers,pipelines,figure,unit,n,median,min,max,passed,trials\n");
    for p in &data.points {
        for (f, v) in &p.figures {
            let m = median(v).unwrap_or(f64::NAN);
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let _ = writeln!(
                s,
                "{},{},{},{},{f},{},{},{m:.3},{lo:.3},{hi:.3},{},{}",
                p.spec.curve.name(),
                p.spec.size,
                p.spec.workers,
                p.spec.pipelines,
                unit(f),
                v.len(),
                p.passed,
                p.trials
            );
        }
    }
    s
}

/// `scaling-samples.csv`: every sample, in trial order.
pub fn samples_csv(data: &ScaleData) -> String {
    let mut s = String::from("curve,size,figure,trial,value\n");
    for p in &data.points {
        for (f, v) in &p.figures {
            for (i, x) in v.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "{},{},{f},{},{x:.3}",
                    p.spec.curve.name(),
                    p.spec.size,
                    i + 1
                );
            }
        }
    }
    s
}

/// The plot of one curve.
pub fn plot(data: &ScaleData, curve: Curve) -> CurvePlot {
    let points = points_of(data, curve);
    let figs = figures(curve);
    CurvePlot {
        title: title(curve).into(),
        caption: how(curve).into(),
        x_label: x_label(curve).into(),
        y_label: if curve == Curve::Suite {
            "seconds".into()
        } else {
            "milliseconds".into()
        },
        sizes: points.iter().map(|p| p.spec.size.to_string()).collect(),
        series: figs
            .iter()
            .map(|f| Series {
                label: f.to_string(),
                samples: points
                    .iter()
                    .map(|p| p.figures.get(*f).cloned().unwrap_or_default())
                    .collect(),
            })
            .collect(),
    }
}

/// Write scale.json, the markdown, both CSVs and every curve's plot into `dir`.
pub fn write_all(dir: &Path, data: &ScaleData) -> anyhow::Result<()> {
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))
    };
    write(JSON, &serde_json::to_vec_pretty(data)?)?;
    write(MARKDOWN, markdown(data).as_bytes())?;
    write(CSV, csv(data).as_bytes())?;
    write(SAMPLES_CSV, samples_csv(data).as_bytes())?;
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("create {}", plots.display()))?;
    crate::report::plots::font::ensure_registered()?;
    for curve in curves_of(data) {
        let p = plot(data, curve);
        let stem = format!("scale-{}", curve.name());
        crate::report::plots::draw_both(
            &plots.join(format!("{stem}.png")),
            &plots.join(format!("{stem}.svg")),
            SIZE,
            |a| p.draw(a),
            |a| p.draw(a),
        )?;
    }
    Ok(())
}
