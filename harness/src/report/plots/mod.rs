//! Plots of a run, PNG and SVG (plotters, text in a font shipped as a crate), in `plots/` of the
//! run directory; a pure function of [`RunData`] like every report.
//!
//! - per figure (phase × name, see [`crate::figure::key`]) with n ≥ 2: an ECDF with every sample as
//!   a rug tick and the configuration's floor and ceiling as dashed lines ([`ecdf`]); a histogram
//!   from n ≥ [`HISTOGRAM_MIN_N`]; an HDR percentile plot from n ≥ [`HDR_MIN_N`] ([`dist`]);
//! - per trial with traffic: a delivery timeline by publish time, fault windows shaded, faults
//!   and elections marked, end-to-end latency below ([`timeline`]).
//!
//! [`plan`] says which plots a run has; `results.md` embeds them from it without drawing.

pub mod compare;
pub mod dist;
pub mod ecdf;
pub mod font;
pub mod scaling;
pub(crate) mod style;
pub mod timeline;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;

use crate::record::{Floor, RunData};

/// Subdirectory of the run directory the plots go in.
pub const DIR: &str = "plots";
/// A histogram says something from this many samples on.
pub const HISTOGRAM_MIN_N: usize = 20;
/// Below this many samples a tail percentile is noise (GATING.md §2).
pub const HDR_MIN_N: usize = 100;

/// One figure's samples, as the plots need them.
#[derive(Debug, Clone)]
pub struct FigureSamples {
    /// `phase-slug.name` (or `run.e2e_latency_…`).
    pub key: String,
    pub values_us: Vec<u64>,
    pub floor: Option<Floor>,
    /// How the samples were measured, for the caption.
    pub how: String,
    /// `trial` (one sample per trial) or `event` (one per delivered event).
    pub unit: &'static str,
}

/// Every figure of the run with its raw samples, in report order.
pub fn figure_samples(data: &RunData) -> Vec<FigureSamples> {
    let mut out: Vec<FigureSamples> = data
        .samples_by_figure()
        .into_iter()
        .map(|(key, samples)| {
            let resolution_ms =
                samples.iter().map(|s| s.resolution_us).max().unwrap_or(0) as f64 / 1000.0;
            // Each sample's description names its own nodes and terms: show the first.
            let others = if samples.len() > 1 {
                " (the first trial's; every trial's is in timings.csv)"
            } else {
                ""
            };
            FigureSamples {
                key,
                values_us: samples.iter().map(|s| s.value_us).collect(),
                floor: samples[0].floor.clone(),
                how: format!(
                    "Measured from {}{others}; {}, resolution ≤ {resolution_ms} ms",
                    samples[0].how, samples[0].method
                ),
                unit: "trial",
            }
        })
        .collect();
    let (steady, fault) = super::latency_split(data);
    for (key, values_us, how) in [
        (
            "run.e2e_latency_steady_ms",
            steady,
            "Measured per event sent outside every fault window: publish → first arrival at the collector",
        ),
        (
            "run.e2e_latency_fault_ms",
            fault,
            "Measured per event sent inside a fault window: publish → first arrival at the collector",
        ),
    ] {
        if !values_us.is_empty() {
            out.push(FigureSamples {
                key: key.into(),
                values_us,
                floor: None,
                how: how.into(),
                unit: "event",
            });
        }
    }
    out
}

/// What a plot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ecdf,
    Histogram,
    Hdr,
    Timeline,
}

/// A plot a run has: its file stem under [`DIR`] (`.png` and `.svg` are written), a title, and
/// what it is drawn from: an index into [`figure_samples`] or into the run's trials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub kind: Kind,
    pub stem: String,
    pub title: String,
    pub source: usize,
}

/// The plots of a run, in the order results.md shows them.
pub fn plan(data: &RunData) -> Vec<Planned> {
    let mut out = Vec::new();
    for (i, f) in figure_samples(data).iter().enumerate() {
        let n = f.values_us.len();
        let slug = file_slug(&f.key);
        if n >= 2 {
            out.push(Planned {
                kind: Kind::Ecdf,
                source: i,
                stem: format!("ecdf-{slug}"),
                title: format!("{}: ECDF of {n} {}s", f.key, f.unit),
            });
        }
        if n >= HISTOGRAM_MIN_N {
            out.push(Planned {
                kind: Kind::Histogram,
                source: i,
                stem: format!("hist-{slug}"),
                title: format!("{}: histogram of {n} {}s", f.key, f.unit),
            });
        }
        if n >= HDR_MIN_N {
            out.push(Planned {
                kind: Kind::Hdr,
                source: i,
                stem: format!("hdr-{slug}"),
                title: format!("{}: percentile distribution of {n} {}s", f.key, f.unit),
            });
        }
    }
    for (i, t) in data.trials.iter().enumerate() {
        if timeline::has_traffic(t) {
            let phase = if t.slug.is_empty() { &t.id } else { &t.slug };
            out.push(Planned {
                kind: Kind::Timeline,
                source: i,
                stem: format!("timeline-{}-{}", file_slug(phase), t.trial),
                title: format!(
                    "Phase {} {} (trial {}/{}): deliveries over time",
                    t.id, t.name, t.trial, t.trials
                ),
            });
        }
    }
    out
}

/// A figure key as a file name: `worker-failover.failover_ms (poll)` → `worker-failover.failover_ms-poll`.
pub fn file_slug(key: &str) -> String {
    let mut s = String::with_capacity(key.len());
    for c in key.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    s.trim_matches('-').to_string()
}

/// Size of every distribution plot (px); timelines are taller.
pub const SIZE: (u32, u32) = (960, 540);

/// Draw every planned plot of `data` into `run_dir/plots/`, as PNG and SVG; returns the files.
pub fn write_all(run_dir: &Path, data: &RunData) -> anyhow::Result<Vec<PathBuf>> {
    font::ensure_registered()?;
    let dir = run_dir.join(DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let figures = figure_samples(data);
    let context = format!("run {}, {} backend", data.run_id, data.backend);
    let mut written = Vec::new();
    for p in plan(data) {
        let png = dir.join(format!("{}.png", p.stem));
        let svg = dir.join(format!("{}.svg", p.stem));
        let result = match p.kind {
            Kind::Timeline => {
                let tl = timeline::Timeline::of(&data.trials[p.source], &p.title, &context);
                draw_both(&png, &svg, timeline::SIZE, |a| tl.draw(a), |a| tl.draw(a))
            }
            kind => {
                let f = &figures[p.source];
                let caption = format!("{}; {context}", f.how);
                match kind {
                    Kind::Ecdf => {
                        let e = ecdf::Ecdf::single(f, &p.title, &caption);
                        draw_both(&png, &svg, SIZE, |a| e.draw(a), |a| e.draw(a))
                    }
                    Kind::Histogram => {
                        let h = dist::Histogram::of(f, &p.title, &caption);
                        draw_both(&png, &svg, SIZE, |a| h.draw(a), |a| h.draw(a))
                    }
                    _ => {
                        let h = dist::Hdr::of(f, &p.title, &caption);
                        draw_both(&png, &svg, SIZE, |a| h.draw(a), |a| h.draw(a))
                    }
                }
            }
        };
        result.with_context(|| format!("plot {}", p.stem))?;
        written.push(png);
        written.push(svg);
    }
    Ok(written)
}

/// A plot drawn on an area of any backend.
pub type Area<'a, DB> = DrawingArea<DB, plotters::coord::Shift>;

/// Draw one plot twice, to a PNG and an SVG file of `size` px.
pub fn draw_both(
    png: &Path,
    svg: &Path,
    size: (u32, u32),
    draw_png: impl FnOnce(&Area<BitMapBackend>) -> anyhow::Result<()>,
    draw_svg: impl FnOnce(&Area<SVGBackend>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    {
        let root = BitMapBackend::new(png, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw_png(&root)?;
        root.present()
            .map_err(plot_err)
            .with_context(|| format!("write {}", png.display()))?;
    }
    let root = SVGBackend::new(svg, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    draw_svg(&root)?;
    root.present()
        .map_err(plot_err)
        .with_context(|| format!("write {}", svg.display()))
}

/// plotters' errors carry the backend's error type; keep their message.
pub fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// The `## Plots` section of results.md: every planned plot, embedded as PNG, linked as SVG.
pub fn markdown(data: &RunData) -> String {
    let plots = plan(data);
    let mut s = String::new();
    if plots.is_empty() {
        return s;
    }
    let _ = writeln!(s, "## Plots\n");
    let _ = writeln!(
        s,
        "ECDFs for every figure with n ≥ 2 (each sample a tick along the bottom, dashed lines at the floor \
         and ceiling the configuration sets), histograms from n ≥ {HISTOGRAM_MIN_N}, percentile plots from \
         n ≥ {HDR_MIN_N}; a delivery timeline per trial with traffic. Each plot is also in `{DIR}/` as SVG.\n"
    );
    for p in plots {
        let _ = writeln!(
            s,
            "**{}** ([svg]({DIR}/{stem}.svg))\n\n![{}]({DIR}/{stem}.png)\n",
            p.title,
            p.title,
            stem = p.stem
        );
    }
    s
}

#[cfg(test)]
mod tests;
