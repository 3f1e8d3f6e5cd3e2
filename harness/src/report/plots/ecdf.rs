//! The ECDF of a figure: one step line per series (a run, or the one run), every sample a tick
//! under the axis (the rug), the configuration's floor and ceiling as dashed lines, n and median
//! in the legend; samples spread over two decades or more without a floor (latencies) get a log
//! x axis. `harness compare` overlays several runs on one.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::style::{self, font, PALETTE};
use super::{plot_err, Area, FigureSamples};
use crate::record::Floor;

/// More samples than this: the step line is thinned to this many points and no rug is drawn.
pub const RUG_MAX: usize = 2000;
/// Height of one rug row, in the y axis's units (fractions).
const RUG_H: f64 = 0.05;

/// One step line.
#[derive(Debug, Clone)]
pub struct Series {
    /// What the series is (`run 20261201-…`), or empty for a single-series plot.
    pub label: String,
    /// Samples in ms, ascending.
    pub sorted_ms: Vec<f64>,
}

impl Series {
    pub fn new(label: impl Into<String>, values_us: &[u64]) -> Self {
        let mut sorted_ms: Vec<f64> = values_us.iter().map(|&v| v as f64 / 1000.0).collect();
        sorted_ms.sort_by(f64::total_cmp);
        Series {
            label: label.into(),
            sorted_ms,
        }
    }

    /// The sample median (mean of the middle two for an even n).
    pub fn median(&self) -> f64 {
        let v = &self.sorted_ms;
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
}

/// The corners of the ECDF step function of ascending `sorted`: it is 0 left of the first
/// sample, jumps by 1/n at each, and is 1 from the last on; `(lo, hi)` extend it to the axis.
pub fn steps(sorted: &[f64], lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let n = sorted.len() as f64;
    let mut out = vec![(lo, 0.0)];
    for (i, &x) in sorted.iter().enumerate() {
        out.push((x, i as f64 / n));
        out.push((x, (i + 1) as f64 / n));
    }
    out.push((hi, 1.0));
    out
}

/// Keep at most `max` of `points`, evenly spaced, always the first and the last.
pub fn thin<T: Copy>(points: &[T], max: usize) -> Vec<T> {
    if points.len() <= max || max < 2 {
        return points.to_vec();
    }
    let last = points.len() - 1;
    (0..max).map(|i| points[i * last / (max - 1)]).collect()
}

#[derive(Debug, Clone)]
pub struct Ecdf {
    pub title: String,
    pub caption: String,
    /// The x axis's name (the figure's), in ms.
    pub x_name: String,
    pub series: Vec<Series>,
    pub floor: Option<Floor>,
}

impl Ecdf {
    /// The ECDF of one figure of one run.
    pub fn single(f: &FigureSamples, title: &str, caption: &str) -> Self {
        Ecdf {
            title: title.into(),
            caption: caption.into(),
            x_name: x_name(&f.key),
            series: vec![Series::new(format!("{}s", f.unit), &f.values_us)],
            floor: f.floor.clone(),
        }
    }

    fn x_range(&self) -> (f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for s in &self.series {
            if let (Some(a), Some(b)) = (s.sorted_ms.first(), s.sorted_ms.last()) {
                lo = lo.min(*a);
                hi = hi.max(*b);
            }
        }
        if let Some(f) = &self.floor {
            lo = lo.min(f.lo_us as f64 / 1000.0);
            hi = hi.max(f.hi_us as f64 / 1000.0);
        }
        if !lo.is_finite() {
            return (0.0, 1.0);
        }
        let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(0.5);
        ((lo - pad).max(0.0), hi + pad)
    }

    /// Samples spread over more than two decades (latencies) get a log x axis.
    fn log_x(&self) -> bool {
        let lo = self
            .series
            .iter()
            .filter_map(|s| s.sorted_ms.first())
            .fold(f64::INFINITY, |a, &b| a.min(b));
        let hi = self
            .series
            .iter()
            .filter_map(|s| s.sorted_ms.last())
            .fold(0.0, |a: f64, &b| a.max(b));
        self.floor.is_none() && lo > 0.0 && hi / lo >= 100.0
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> anyhow::Result<()> {
        let area = style::header(root, &self.title, &self.caption)?;
        // One rug row per series under y = 0.
        let y0 = -RUG_H * self.series.len() as f64 - 0.01;
        let builder = || {
            let mut b = ChartBuilder::on(&area);
            b.margin_left(10)
                .margin_right(25)
                .margin_bottom(10)
                .x_label_area_size(48)
                .y_label_area_size(70);
            b
        };
        if self.log_x() {
            let lo = self
                .series
                .iter()
                .filter_map(|s| s.sorted_ms.first())
                .fold(f64::INFINITY, |a, &b| a.min(b));
            let hi = self
                .series
                .iter()
                .filter_map(|s| s.sorted_ms.last())
                .fold(0.0, |a: f64, &b| a.max(b));
            let (x0, x1) = (lo / 1.3, hi * 1.3);
            let mut chart = builder()
                .build_cartesian_2d((x0..x1).log_scale(), y0..1.04)
                .map_err(plot_err)?;
            self.plot(&mut chart, (x0, x1), y0, " (ms, log)")
        } else {
            let (x0, x1) = self.x_range();
            let mut chart = builder()
                .build_cartesian_2d(x0..x1, y0..1.04)
                .map_err(plot_err)?;
            self.plot(&mut chart, (x0, x1), y0, " (ms)")
        }
    }

    fn plot<'a, DB: DrawingBackend + 'a, X>(
        &self,
        chart: &mut ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>,
        (x0, x1): (f64, f64),
        y0: f64,
        unit: &str,
    ) -> anyhow::Result<()>
    where
        X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
    {
        let rug_h = RUG_H;
        chart
            .configure_mesh()
            .x_desc(format!("{}{unit}", self.x_name))
            .y_desc("fraction of samples ≤ x")
            .x_label_formatter(&|v| style::ms(*v))
            .y_label_formatter(&|v| {
                if *v < -1e-9 {
                    String::new()
                } else {
                    format!("{v:.1}")
                }
            })
            .label_style(font(style::TICK_PX))
            .axis_desc_style(font(style::LABEL_PX))
            .max_light_lines(1)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(plot_err)?;
        for (j, s) in self.series.iter().enumerate() {
            let color = PALETTE[j % PALETTE.len()];
            let n = s.sorted_ms.len();
            let median = s.median();
            let label = format!(
                "{}{}n = {n}, median {} ms",
                s.label,
                if s.label.is_empty() { "" } else { ": " },
                style::ms(median)
            );
            let points = thin(&steps(&s.sorted_ms, x0, x1), RUG_MAX * 2);
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(std::iter::once(Circle::new(
                    (median, 0.5),
                    4,
                    color.filled(),
                )))
                .map_err(plot_err)?;
            if n <= RUG_MAX {
                let top = -0.01 - rug_h * j as f64 - 0.005;
                let bottom = top - rug_h + 0.01;
                chart
                    .draw_series(s.sorted_ms.iter().map(|&v| {
                        PathElement::new(vec![(v, top), (v, bottom)], color.stroke_width(1))
                    }))
                    .map_err(plot_err)?;
            }
        }
        if let Some(f) = &self.floor {
            draw_floor(chart, f, y0, 1.04)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .margin(10)
            .label_font(font(style::LEGEND_PX))
            .background_style(WHITE.mix(0.9))
            .border_style(style::GREY)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }
}

/// The x axis's name: the figure's name without its phase (`worker-failover.failover_ms` →
/// `failover_ms`), keeping a `(poll)` suffix.
pub fn x_name(key: &str) -> String {
    key.split_once('.')
        .map_or(key, |(_, name)| name)
        .to_string()
}

/// Dashed vertical lines at a floor's two ends (one when they coincide), in the legend with
/// their value and the expression that set them.
pub fn draw_floor<'a, DB: DrawingBackend + 'a, X: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>,
    f: &Floor,
    y0: f64,
    y1: f64,
) -> anyhow::Result<()> {
    let lo = f.lo_us as f64 / 1000.0;
    let hi = f.hi_us as f64 / 1000.0;
    let (lo_expr, hi_expr) = f
        .expr
        .split_once("..")
        .map_or((f.expr.trim(), f.expr.trim()), |(a, b)| {
            (a.trim(), b.trim())
        });
    let mut lines = vec![];
    if f.lo_us == f.hi_us {
        lines.push((
            lo,
            format!("floor = ceiling = {} ms ({lo_expr})", style::ms(lo)),
            BLACK,
        ));
    } else {
        lines.push((lo, format!("floor {} ms = {lo_expr}", style::ms(lo)), BLACK));
        lines.push((
            hi,
            format!("ceiling {} ms = {hi_expr}", style::ms(hi)),
            RGBColor(200, 0, 0),
        ));
    }
    for (x, label, color) in lines {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x, y0), (x, y1)],
                8,
                5,
                color.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| {
                plotters::element::DashedPathElement::new(
                    vec![(x, y), (x + 20, y)],
                    5,
                    3,
                    color.stroke_width(2),
                )
            });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_corners_are_exact() {
        let s = steps(&[1.0, 2.0, 2.0, 4.0], 0.0, 5.0);
        assert_eq!(
            s,
            vec![
                (0.0, 0.0),
                (1.0, 0.0),
                (1.0, 0.25),
                (2.0, 0.25),
                (2.0, 0.5),
                (2.0, 0.5),
                (2.0, 0.75),
                (4.0, 0.75),
                (4.0, 1.0),
                (5.0, 1.0),
            ]
        );
    }

    #[test]
    fn median_and_thinning() {
        assert_eq!(Series::new("", &[3000, 1000, 2000]).median(), 2.0);
        assert_eq!(Series::new("", &[4000, 1000, 2000, 3000]).median(), 2.5);
        let v: Vec<u32> = (0..=100).collect();
        let t = thin(&v, 11);
        assert_eq!(t, vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert_eq!(thin(&v[..5], 11), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn log_axis_only_for_wide_spreads_without_a_floor() {
        let e = |values: &[u64], floor: Option<Floor>| Ecdf {
            title: String::new(),
            caption: String::new(),
            x_name: String::new(),
            series: vec![Series::new("", values)],
            floor,
        };
        assert!(e(&[500, 2_000, 60_000], None).log_x());
        assert!(!e(&[900_000, 1_100_000], None).log_x());
        let floor = Floor {
            expr: "grace".into(),
            lo_us: 1,
            hi_us: 1,
        };
        assert!(!e(&[500, 60_000], Some(floor)).log_x());
    }

    #[test]
    fn axis_name_drops_the_phase() {
        assert_eq!(x_name("worker-failover.failover_ms"), "failover_ms");
        assert_eq!(x_name("x.election_ms (poll)"), "election_ms (poll)");
    }
}
