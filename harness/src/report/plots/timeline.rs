//! A trial's delivery timeline in Jepsen's manner: events per second in time buckets by publish
//! time (published, delivered, duplicated, lost, unknown), fault windows shaded, a line at every
//! fault step, a marker where a leader was elected; end-to-end latency per event below it on a
//! log axis.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ecdf::thin;
use super::style::{self, font, Mark, PALETTE};
use super::{plot_err, Area};
use crate::record::TrialRecord;

/// Size of a timeline plot (px).
pub const SIZE: (u32, u32) = (1100, 780);
/// At most this many latency points are drawn (evenly thinned beyond).
const LATENCY_POINTS_MAX: usize = 20_000;
/// Steps drawn as a vertical line: the faults, and the restarts that end them.
const FAULT_ACTIONS: [&str; 7] = [
    "kill",
    "stop",
    "pause",
    "resume",
    "partition",
    "heal",
    "restart",
];

/// Whether the trial published events (and so has a timeline).
pub fn has_traffic(t: &TrialRecord) -> bool {
    t.events.as_ref().is_some_and(|c| c.published > 0)
}

/// The smallest bucket of 50 ms … 10 s (1-2-5 steps) that cuts `span_us` into ≤ 120 buckets.
/// Never under 50 ms: paced traffic (100 events/s) then has a few events in every bucket.
pub fn bucket_width_us(span_us: u64) -> u64 {
    const MS: [u64; 8] = [50, 100, 200, 500, 1000, 2000, 5000, 10_000];
    MS.iter()
        .map(|ms| ms * 1000)
        .find(|w| span_us.div_ceil(*w) <= 120)
        .unwrap_or(10_000_000)
}

/// Per-bucket counts of a trial's matching events by publish time; bucket `i` covers
/// `[start + i·width, start + (i+1)·width)`. Events sent before the trial's start count in bucket 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    pub start_us: u64,
    pub width_us: u64,
    /// Delivered + lost + unknown: every matching event sent in the bucket.
    pub published: Vec<u64>,
    pub delivered: Vec<u64>,
    /// Extra copies, by the send time of their event.
    pub duplicated: Vec<u64>,
    pub lost: Vec<u64>,
    pub unknown: Vec<u64>,
}

impl Buckets {
    /// Bucket `t`'s events `width_us` wide, or `None` without traffic.
    pub fn of(t: &TrialRecord, width_us: u64) -> Option<Buckets> {
        let c = t.events.as_ref()?;
        let sent_delivered: Vec<u64> = c
            .delivered_at_us
            .iter()
            .zip(&c.latency_us)
            .map(|(at, lat)| at.saturating_sub(*lat))
            .collect();
        let last = sent_delivered
            .iter()
            .chain(&c.lost_sent_at_us)
            .chain(&c.unknown_sent_at_us)
            .chain(&c.duplicated_sent_at_us)
            .copied()
            .max()
            .unwrap_or(t.started_us);
        let end = last.max(t.started_us + t.duration_us);
        let n = ((end - t.started_us) / width_us + 1) as usize;
        let index = |sent: u64| (sent.saturating_sub(t.started_us) / width_us) as usize;
        let count = |times: &[u64]| {
            let mut v = vec![0u64; n];
            for &s in times {
                v[index(s)] += 1;
            }
            v
        };
        let delivered = count(&sent_delivered);
        let lost = count(&c.lost_sent_at_us);
        let unknown = count(&c.unknown_sent_at_us);
        let published = (0..n)
            .map(|i| delivered[i] + lost[i] + unknown[i])
            .collect();
        Some(Buckets {
            start_us: t.started_us,
            width_us,
            published,
            delivered,
            duplicated: count(&c.duplicated_sent_at_us),
            lost,
            unknown,
        })
    }

    /// A series as a step line in events/s against seconds since the trial's start.
    fn rate_steps(&self, counts: &[u64]) -> Vec<(f64, f64)> {
        let w = self.width_us as f64 / 1e6;
        let mut out = Vec::with_capacity(counts.len() * 2);
        for (i, &c) in counts.iter().enumerate() {
            let r = c as f64 / w;
            out.push((i as f64 * w, r));
            out.push(((i + 1) as f64 * w, r));
        }
        out
    }
}

/// A fault step's instant and label, from the trial's steps (`kill worker-1`).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultLine {
    pub at_s: f64,
    pub action: String,
    pub label: String,
}

/// The fault steps of `t`, their `@name` targets resolved through the trial's bindings.
pub fn fault_lines(t: &TrialRecord) -> Vec<FaultLine> {
    t.steps
        .iter()
        .filter(|s| FAULT_ACTIONS.contains(&s.action.as_str()))
        .map(|s| {
            let label = s
                .summary
                .split_whitespace()
                .map(|w| match w.strip_prefix('@') {
                    Some(name) => t.bindings.get(name).cloned().unwrap_or_else(|| w.into()),
                    None => w.into(),
                })
                .collect::<Vec<_>>()
                .join(" ");
            FaultLine {
                at_s: s.offset_us as f64 / 1e6,
                action: s.action.clone(),
                label,
            }
        })
        .collect()
}

/// The windows a fault step opens and a later step closes, shaded like the measured ones (Jepsen's
/// nemesis bands): `links cut` from a partition to the heal of the same node, `paused` from a
/// pause to its resume. One still open at the end of the trial runs to `end_s`.
pub fn fault_windows(lines: &[FaultLine], end_s: f64) -> Vec<(String, f64, f64)> {
    let target = |l: &FaultLine| l.label.split_whitespace().nth(1).map(str::to_owned);
    let mut out = Vec::new();
    for (i, open) in lines.iter().enumerate() {
        let (name, closer) = match open.action.as_str() {
            "partition" => ("links cut", "heal"),
            "pause" => ("paused", "resume"),
            _ => continue,
        };
        let to = lines[i + 1..]
            .iter()
            .find(|l| l.action == closer && target(l) == target(open))
            .map_or(end_s, |l| l.at_s);
        out.push((name.to_string(), open.at_s, to));
    }
    out
}

fn fault_color(action: &str) -> RGBColor {
    match action {
        "kill" | "stop" | "pause" | "partition" => RGBColor(200, 0, 0),
        _ => RGBColor(0, 140, 60),
    }
}

#[derive(Debug, Clone)]
pub struct Timeline {
    pub title: String,
    pub caption: String,
    pub buckets: Buckets,
    /// (window name, from s, to s) since the trial's start.
    pub windows: Vec<(String, f64, f64)>,
    pub faults: Vec<FaultLine>,
    /// Seconds since start at which a new leader was elected (end of an `election` window).
    pub elections: Vec<f64>,
    /// (send time s, latency ms) per delivered event.
    pub latency: Vec<(f64, f64)>,
    pub end_s: f64,
}

impl Timeline {
    pub fn of(t: &TrialRecord, title: &str, context: &str) -> Self {
        let c = t.events.clone().unwrap_or_default();
        let span = t.duration_us;
        let width = bucket_width_us(span);
        let buckets = Buckets::of(t, width).unwrap_or(Buckets {
            start_us: t.started_us,
            width_us: width,
            published: vec![],
            delivered: vec![],
            duplicated: vec![],
            lost: vec![],
            unknown: vec![],
        });
        let rel = |us: u64| us.saturating_sub(t.started_us) as f64 / 1e6;
        let latency = c
            .delivered_at_us
            .iter()
            .zip(&c.latency_us)
            .map(|(at, lat)| (rel(at.saturating_sub(*lat)), (*lat).max(1) as f64 / 1000.0))
            .collect::<Vec<_>>();
        let missing_times = c.lost > 0 && c.lost_sent_at_us.is_empty();
        let caption = format!(
            "{} events published, {} of them matching the pipelines' filter; the matching ones are counted here by \
             publish time in {} ms buckets (rate = count / bucket width): {} delivered, {} duplicated, {} lost, {} unknown \
             (publish never acknowledged). Shaded: a measured fault window (fault → recovery), links cut \
             (partition → heal) and a node paused (pause → resume). Below: publish → first \
             arrival at the collector, per event. {context}{}",
            c.published,
            c.expected + c.unknown,
            width / 1000,
            c.delivered,
            c.duplicated,
            c.lost,
            c.unknown,
            if missing_times { " (this run.json predates lost send times: lost events are not bucketed)" } else { "" }
        );
        let faults = fault_lines(t);
        let end_s = buckets.published.len() as f64 * width as f64 / 1e6;
        let mut windows: Vec<(String, f64, f64)> = t
            .windows
            .iter()
            .map(|w| (w.name.clone(), rel(w.from_us), rel(w.to_us)))
            .collect();
        windows.extend(fault_windows(&faults, end_s));
        Timeline {
            title: title.into(),
            caption,
            windows,
            faults,
            elections: t
                .windows
                .iter()
                .filter(|w| w.name == "election")
                .map(|w| rel(w.to_us))
                .collect(),
            end_s,
            buckets,
            latency: thin(&latency, LATENCY_POINTS_MAX),
        }
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> anyhow::Result<()> {
        let area = style::header(root, &self.title, &self.caption)?;
        let (w, h) = area.dim_in_pixel();
        let (plots, legend) = area.split_horizontally(w.saturating_sub(LEGEND_W));
        let (top, bottom) = plots.split_vertically((h as f64 * 0.58) as u32);
        self.draw_rates(&top)?;
        self.draw_latency(&bottom)?;
        style::legend(&legend, &self.legend_entries())
    }

    fn legend_entries(&self) -> Vec<(Mark, String)> {
        let mut out: Vec<(Mark, String)> = self
            .series()
            .iter()
            .map(|(name, counts, color, width)| {
                let total: u64 = counts.iter().sum();
                (Mark::Line(*color, *width), format!("{name}: {total}"))
            })
            .collect();
        for (i, name) in self.window_names().into_iter().enumerate() {
            out.push((Mark::Band(window_color(i)), format!("window: {name}")));
        }
        let mut kinds: Vec<&str> = vec![];
        for f in &self.faults {
            if !kinds.contains(&f.action.as_str()) {
                kinds.push(&f.action);
                out.push((
                    Mark::Tick(fault_color(&f.action)),
                    format!("{} (step)", f.action),
                ));
            }
        }
        if !self.elections.is_empty() {
            out.push((Mark::Triangle(ELECTED), "leader elected".into()));
        }
        out.push((
            Mark::Dot(PALETTE[0]),
            format!("e2e latency ({} events)", self.latency.len()),
        ));
        out
    }

    /// The rate panel's series: name, per-bucket counts, colour, line width.
    fn series(&self) -> [(&'static str, &[u64], RGBColor, u32); 5] {
        let b = &self.buckets;
        [
            (
                "published (matching)",
                &b.published,
                RGBColor(170, 170, 170),
                6,
            ),
            ("delivered", &b.delivered, PALETTE[0], 2),
            ("duplicated", &b.duplicated, PALETTE[1], 2),
            ("lost", &b.lost, PALETTE[4], 2),
            ("unknown", &b.unknown, PALETTE[3], 2),
        ]
    }

    fn draw_rates<DB: DrawingBackend>(&self, area: &Area<DB>) -> anyhow::Result<()> {
        let b = &self.buckets;
        let w = b.width_us as f64 / 1e6;
        let peak = b
            .published
            .iter()
            .chain(&b.duplicated)
            .copied()
            .max()
            .unwrap_or(0) as f64
            / w;
        // Log scale: paced traffic and a burst both stay legible. An empty bucket sits on the
        // floor, half an event per bucket.
        let y0 = 0.5 / w;
        let y1 = (peak * 3.0).max(y0 * 20.0);
        let mut chart = ChartBuilder::on(area)
            .margin_left(10)
            .margin_right(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..self.end_s, (y0..y1).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("time since trial start (s), events placed by publish time")
            .y_desc("events/s (log)")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(font(style::TICK_PX))
            .axis_desc_style(font(style::LABEL_PX))
            .max_light_lines(1)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(plot_err)?;
        self.shade(&mut chart, (y0, y1))?;
        for (_, counts, color, width) in self.series() {
            let points = b
                .rate_steps(counts)
                .into_iter()
                .map(|(x, r)| (x, r.max(y0)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(width)))
                .map_err(plot_err)?;
        }
        self.draw_markers(&mut chart, (y0, y1))
    }

    /// Fault windows (shaded) and fault lines from `y0` to `y1`.
    fn shade<DB: DrawingBackend>(
        &self,
        chart: &mut LogChart<'_, DB>,
        (y0, y1): (f64, f64),
    ) -> anyhow::Result<()> {
        let names = self.window_names();
        for (name, from, to) in &self.windows {
            let i = names.iter().position(|n| n == name).unwrap_or(0);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(*from, y0), (*to, y1)],
                    window_color(i).filled(),
                )))
                .map_err(plot_err)?;
        }
        chart
            .draw_series(self.faults.iter().map(|f| {
                PathElement::new(
                    vec![(f.at_s, y0), (f.at_s, y1)],
                    fault_color(&f.action).stroke_width(2),
                )
            }))
            .map_err(plot_err)?;
        Ok(())
    }

    /// Window names in order of first appearance: their index picks their colour.
    fn window_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = vec![];
        for w in &self.windows {
            if !names.contains(&w.0.as_str()) {
                names.push(&w.0);
            }
        }
        names
    }

    /// Labels of the fault lines and the leader-elected markers, along the top of the rate panel.
    fn draw_markers<DB: DrawingBackend>(
        &self,
        chart: &mut LogChart<'_, DB>,
        (y0, y1): (f64, f64),
    ) -> anyhow::Result<()> {
        // A height as a fraction of the log axis.
        let at = |frac: f64| (y0.ln() + (y1.ln() - y0.ln()) * frac).exp();
        for (i, f) in self.faults.iter().enumerate() {
            // Stagger labels so neighbouring ones do not overwrite each other; near the right
            // edge, write them leftwards of their line.
            let y = at(0.98 - 0.08 * (i % 3) as f64);
            let right = f.at_s > self.end_s * 0.7;
            let (text, pos) = if right {
                (format!("{} ", f.label), Pos::new(HPos::Right, VPos::Top))
            } else {
                (format!(" {}", f.label), Pos::new(HPos::Left, VPos::Top))
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    text,
                    (f.at_s, y),
                    font(style::CAPTION_PX)
                        .color(&fault_color(&f.action))
                        .pos(pos),
                )))
                .map_err(plot_err)?;
        }
        let y = at(0.72);
        chart
            .draw_series(
                self.elections
                    .iter()
                    .map(|&t| TriangleMarker::new((t, y), 8, ELECTED.filled())),
            )
            .map_err(plot_err)?;
        Ok(())
    }

    fn draw_latency<DB: DrawingBackend>(&self, area: &Area<DB>) -> anyhow::Result<()> {
        let lo = self
            .latency
            .iter()
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min);
        let hi = self.latency.iter().map(|p| p.1).fold(0.0, f64::max);
        // Whole decades, so the axis always has labelled powers of ten.
        let (lo, hi) = if lo.is_finite() {
            let lo = 10f64.powf(lo.log10().floor());
            // At least two decades: one alone crowds its 1–9 labels together.
            (lo, 10f64.powf(hi.log10().ceil()).max(lo * 100.0))
        } else {
            (0.1, 10.0)
        };
        let mut chart = ChartBuilder::on(area)
            .margin_left(10)
            .margin_right(15)
            .margin_bottom(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..self.end_s, (lo..hi).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("publish time since trial start (s)")
            .y_desc("e2e latency (ms, log)")
            .y_label_formatter(&|v| style::ms(*v))
            .label_style(font(style::TICK_PX))
            .axis_desc_style(font(style::LABEL_PX))
            .max_light_lines(1)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(plot_err)?;
        self.shade(&mut chart, (lo, hi))?;
        let color = PALETTE[0];
        chart
            .draw_series(
                self.latency
                    .iter()
                    .map(|&p| Circle::new(p, 2, color.mix(0.6).filled())),
            )
            .map_err(plot_err)?;
        Ok(())
    }
}

/// Width of the legend column (px).
const LEGEND_W: u32 = 250;
const ELECTED: RGBColor = RGBColor(0, 110, 0);

fn window_color(i: usize) -> RGBAColor {
    PALETTE[(i + 2) % PALETTE.len()].mix(0.15)
}

type LogChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, LogCoord<f64>>>;
