//! `harness compare RUN_A RUN_B …`: one ECDF per figure the runs share, a step line per run,
//! written with `compare.md` into an output directory.
//!
//! [`write`] takes the gate's statistics table (markdown, `gate::compare::table`) and puts it
//! under `## Statistics`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::ecdf::{Ecdf, Series};
use super::{draw_both, figure_samples, file_slug, font, FigureSamples, SIZE};
use crate::record::RunData;

/// One run to compare: its data and a short label for legends.
#[derive(Debug, Clone)]
pub struct Input {
    pub label: String,
    pub data: RunData,
}

/// A figure and each run's samples of it (runs without it are absent).
#[derive(Debug, Clone)]
pub struct Shared {
    pub key: String,
    pub runs: Vec<(String, FigureSamples)>,
}

/// Figures present in at least two of `runs`, in the first run's order then the others'.
pub fn shared_figures(runs: &[Input]) -> Vec<Shared> {
    let mut out: Vec<Shared> = Vec::new();
    for run in runs {
        for f in figure_samples(&run.data) {
            match out.iter_mut().find(|s| s.key == f.key) {
                Some(s) => s.runs.push((run.label.clone(), f)),
                None => out.push(Shared {
                    key: f.key.clone(),
                    runs: vec![(run.label.clone(), f)],
                }),
            }
        }
    }
    out.retain(|s| s.runs.len() >= 2);
    out
}

/// The overlaid ECDF of one shared figure. The floor is drawn when every run has the same
/// (same configuration); otherwise the caption lists each run's.
pub fn overlay(s: &Shared) -> Ecdf {
    let floors: Vec<_> = s.runs.iter().map(|(_, f)| f.floor.clone()).collect();
    let same_floor = floors.windows(2).all(|w| w[0] == w[1]);
    let mut caption = format!("{}.", s.runs[0].1.how);
    if !same_floor {
        caption.push_str(" Floors differ between runs (different configurations):");
        for ((label, _), floor) in s.runs.iter().zip(&floors) {
            let _ = match floor {
                Some(f) => write!(
                    caption,
                    " {label} {}–{} ms;",
                    f.lo_us as f64 / 1000.0,
                    f.hi_us as f64 / 1000.0
                ),
                None => write!(caption, " {label} none;"),
            };
        }
    }
    Ecdf {
        title: format!("{}: ECDF per run", s.key),
        caption,
        x_name: super::ecdf::x_name(&s.key),
        series: s
            .runs
            .iter()
            .map(|(label, f)| Series::new(label.clone(), &f.values_us))
            .collect(),
        floor: if same_floor { floors[0].clone() } else { None },
    }
}

/// Draw every shared figure's overlay into `out` (PNG and SVG) and write `compare.md`, with
/// `statistics` (the gate's table, markdown) when given. Returns the path of `compare.md`.
pub fn write(out: &Path, runs: &[Input], statistics: Option<&str>) -> anyhow::Result<PathBuf> {
    font::ensure_registered()?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let shared = shared_figures(runs);
    let mut md = String::new();
    let _ = writeln!(md, "# Comparison of {} runs\n", runs.len());
    for r in runs {
        let c = &r.data.config;
        let _ = writeln!(
            md,
            "- **{}**: run `{}`, {} backend, seed {}, Raft heartbeat {} ms, election {}–{} ms, {} trials",
            r.label,
            r.data.run_id,
            r.data.backend,
            r.data.seed,
            c.raft.heartbeat_ms,
            c.raft.election_min_ms,
            c.raft.election_max_ms,
            r.data.trials.len()
        );
    }
    let _ = writeln!(md, "\n## Statistics\n");
    match statistics {
        Some(table) => md.push_str(table),
        None => md.push_str("No statistics were computed for this comparison.\n"),
    }
    let _ = writeln!(md, "\n## Figures\n");
    if shared.is_empty() {
        let _ = writeln!(md, "The runs share no figure.");
    }
    for s in &shared {
        let stem = format!("ecdf-{}", file_slug(&s.key));
        let e = overlay(s);
        draw_both(
            &out.join(format!("{stem}.png")),
            &out.join(format!("{stem}.svg")),
            SIZE,
            |a| e.draw(a),
            |a| e.draw(a),
        )
        .with_context(|| format!("plot {stem}"))?;
        let _ = writeln!(
            md,
            "**{}** ([svg]({stem}.svg))\n\n![{}]({stem}.png)\n",
            e.title, e.title
        );
    }
    let path = out.join("compare.md");
    std::fs::write(&path, md).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Load each run directory's `run.json`, labelled by its directory name.
pub fn load(dirs: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    dirs.iter()
        .map(|dir| {
            let path = dir.join(crate::report::RUN_DATA);
            let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            let data: RunData = serde_json::from_slice(&bytes)
                .with_context(|| format!("parse {}", path.display()))?;
            let label = match dir.file_name().and_then(|n| n.to_str()) {
                Some(n) if n != "latest" && n != "." => n.to_string(),
                _ => data.run_id.clone(),
            };
            Ok(Input { label, data })
        })
        .collect()
}
