//! A figure's distribution beyond its ECDF: a histogram (n ≥ 20) and, for many samples
//! (n ≥ 100), the HDR percentile plot: latency against 1/(1−q) on a log axis, so 90 %, 99 %,
//! 99.9 % are equally spaced and the tail is legible.

use hdrhistogram::Histogram as Hdrh;
use plotters::prelude::*;

use super::ecdf::{draw_floor, x_name};
use super::style::{self, font, PALETTE};
use super::{plot_err, Area, FigureSamples};
use crate::record::Floor;

/// Equal-width bins over `[min, max]` of ascending `sorted`: `(first edge, width, counts)`.
/// The width follows Freedman–Diaconis (2 IQR n^(−1/3)), clamped to 5–50 bins; a sample in
/// which every value is equal gets one bin 1 ms wide.
pub fn bins(sorted: &[f64]) -> (f64, f64, Vec<u64>) {
    let (Some(&lo), Some(&hi)) = (sorted.first(), sorted.last()) else {
        return (0.0, 1.0, vec![]);
    };
    if hi <= lo {
        return (lo - 0.5, 1.0, vec![sorted.len() as u64]);
    }
    let n = sorted.len();
    let q = |p: f64| sorted[((n - 1) as f64 * p).round() as usize];
    let iqr = q(0.75) - q(0.25);
    let fd = 2.0 * iqr / (n as f64).cbrt();
    let count = if fd > 0.0 {
        ((hi - lo) / fd).ceil() as usize
    } else {
        (n as f64).sqrt().ceil() as usize
    }
    .clamp(5, 50);
    let width = (hi - lo) / count as f64;
    let mut counts = vec![0u64; count];
    for &v in sorted {
        // The last edge is closed: the maximum falls in the last bin.
        let i = (((v - lo) / width) as usize).min(count - 1);
        counts[i] += 1;
    }
    (lo, width, counts)
}

#[derive(Debug, Clone)]
pub struct Histogram {
    pub title: String,
    pub caption: String,
    pub x_name: String,
    pub unit: &'static str,
    pub sorted_ms: Vec<f64>,
    pub floor: Option<Floor>,
}

impl Histogram {
    pub fn of(f: &FigureSamples, title: &str, caption: &str) -> Self {
        let mut sorted_ms: Vec<f64> = f.values_us.iter().map(|&v| v as f64 / 1000.0).collect();
        sorted_ms.sort_by(f64::total_cmp);
        Histogram {
            title: title.into(),
            caption: caption.into(),
            x_name: x_name(&f.key),
            unit: f.unit,
            sorted_ms,
            floor: f.floor.clone(),
        }
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> anyhow::Result<()> {
        let area = style::header(root, &self.title, &self.caption)?;
        let (start, width, counts) = bins(&self.sorted_ms);
        let end = start + width * counts.len() as f64;
        let (mut x0, mut x1) = (start, end);
        if let Some(f) = &self.floor {
            x0 = x0.min(f.lo_us as f64 / 1000.0);
            x1 = x1.max(f.hi_us as f64 / 1000.0);
        }
        let pad = (x1 - x0) * 0.05;
        let (x0, x1) = ((x0 - pad).max(0.0), x1 + pad);
        let top = counts.iter().copied().max().unwrap_or(1) as f64 * 1.15;
        let mut chart = ChartBuilder::on(&area)
            .margin_left(10)
            .margin_right(25)
            .margin_bottom(10)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, 0.0..top)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(format!(
                "{} (ms), bins of {} ms",
                self.x_name,
                style::ms(width)
            ))
            .y_desc(format!("{}s per bin", self.unit))
            .x_label_formatter(&|v| style::ms(*v))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(font(style::TICK_PX))
            .axis_desc_style(font(style::LABEL_PX))
            .max_light_lines(1)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(plot_err)?;
        let color = PALETTE[0];
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let a = start + width * i as f64;
                Rectangle::new([(a, 0.0), (a + width, c as f64)], color.mix(0.7).filled())
            }))
            .map_err(plot_err)?
            .label(format!("{} {}s", self.sorted_ms.len(), self.unit))
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], color.mix(0.7).filled())
            });
        if let Some(f) = &self.floor {
            draw_floor(&mut chart, f, 0.0, top)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(10)
            .label_font(font(style::LEGEND_PX))
            .background_style(WHITE.mix(0.9))
            .border_style(style::GREY)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }
}

/// `(1/(1−q), value ms)` at the quantiles an HDR histogram of `values_us` steps through (5 ticks
/// per half distance, as HdrHistogram's own plotter), up to but not including q = 1.
pub fn hdr_points(values_us: &[u64]) -> Vec<(f64, f64)> {
    // The same bounds and precision as the report's percentile tables (record.rs).
    let Ok(mut h) = Hdrh::<u64>::new_with_bounds(1, 3_600_000_000, 3) else {
        return vec![];
    };
    for &v in values_us {
        h.saturating_record(v.max(1));
    }
    // A bucket's representative value can lie just past the exact maximum; clamp to it.
    let max = values_us.iter().copied().max().unwrap_or(0);
    h.iter_quantiles(5)
        .filter(|it| it.quantile_iterated_to() < 1.0)
        .map(|it| {
            (
                1.0 / (1.0 - it.quantile_iterated_to()),
                it.value_iterated_to().min(max) as f64 / 1000.0,
            )
        })
        .collect()
}

/// A tick on the 1/(1−q) axis as its percentile: 1 → `0%`, 10 → `90%`, 1000 → `99.9%`.
pub fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

#[derive(Debug, Clone)]
pub struct Hdr {
    pub title: String,
    pub caption: String,
    pub y_name: String,
    pub n: usize,
    pub max_ms: f64,
    pub points: Vec<(f64, f64)>,
}

impl Hdr {
    pub fn of(f: &FigureSamples, title: &str, caption: &str) -> Self {
        Hdr {
            title: title.into(),
            caption: format!(
                "{caption}. HDR histogram (3 significant figures), 5 steps per halving of the remaining tail."
            ),
            y_name: x_name(&f.key),
            n: f.values_us.len(),
            max_ms: f.values_us.iter().copied().max().unwrap_or(0) as f64 / 1000.0,
            points: hdr_points(&f.values_us),
        }
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> anyhow::Result<()> {
        let area = style::header(root, &self.title, &self.caption)?;
        let x1 = self.points.last().map_or(10.0, |p| p.0).max(10.0) * 1.5;
        let top = self.max_ms.max(0.001) * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .margin_left(10)
            .margin_right(25)
            .margin_bottom(10)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d((1.0..x1).log_scale(), 0.0..top)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("percentile (log scale of 1/(1 − q))")
            .y_desc(format!("{} (ms)", self.y_name))
            .x_label_formatter(&|v| percentile_label(*v))
            .y_label_formatter(&|v| style::ms(*v))
            .label_style(font(style::TICK_PX))
            .axis_desc_style(font(style::LABEL_PX))
            .max_light_lines(1)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(plot_err)?;
        let color = PALETTE[0];
        chart
            .draw_series(LineSeries::new(self.points.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(format!("n = {}, max {} ms", self.n, style::ms(self.max_ms)))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_every_sample_once() {
        // 1..=100: IQR = 75 − 26 = 49 → FD width 2·49/100^(1/3) ≈ 21.1 → ⌈99/21.1⌉ = 5 bins of 19.8.
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let (start, width, counts) = bins(&v);
        assert_eq!(start, 1.0);
        assert_eq!(counts.len(), 5);
        assert!((width - 19.8).abs() < 1e-9);
        assert_eq!(counts, vec![20, 20, 20, 20, 20]);
        assert_eq!(counts.iter().sum::<u64>(), 100);
        // All equal: one bin.
        assert_eq!(bins(&[7.0, 7.0, 7.0]), (6.5, 1.0, vec![3]));
        assert_eq!(bins(&[]).2, Vec::<u64>::new());
    }

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(2.0), "50%");
    }

    #[test]
    fn hdr_points_rise_to_the_tail() {
        let v: Vec<u64> = (1..=1000).map(|ms| ms * 1000).collect();
        let p = hdr_points(&v);
        assert_eq!(p[0].0, 1.0);
        assert!(
            p.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{p:?}"
        );
        // q = 0.5 → x = 2: the median, to HDR's 3 significant figures.
        let (_, at_half) = p.iter().find(|(x, _)| (*x - 2.0).abs() < 1e-9).unwrap();
        assert!((at_half - 500.0).abs() <= 0.5, "{at_half}");
        assert!(p.last().unwrap().1 <= 1000.0);
    }
}
