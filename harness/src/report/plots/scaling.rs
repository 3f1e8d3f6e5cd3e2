//! One `harness scale` curve: a figure's median against the size, with every trial's sample as
//! a dot and its min–max as a bar; the sizes are evenly spaced categories (they span decades,
//! and the empty log is a size of 0).

use plotters::prelude::*;

use super::style::{self, font, Mark, PALETTE};
use super::{plot_err, Area};

/// Pixel size of a scaling plot.
pub const SIZE: (u32, u32) = (900, 520);

/// One figure's samples at each size.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    /// Samples per point, in the order of [`CurvePlot::sizes`] (empty: not measured there).
    pub samples: Vec<Vec<f64>>,
}

#[derive(Debug, Clone)]
pub struct CurvePlot {
    pub title: String,
    pub caption: String,
    pub x_label: String,
    pub y_label: String,
    pub sizes: Vec<String>,
    pub series: Vec<Series>,
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

impl CurvePlot {
    pub fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> anyhow::Result<()> {
        let area = style::header(root, &self.title, &self.caption)?;
        let (w, _) = area.dim_in_pixel();
        let (plot, legend) = area.split_horizontally(w.saturating_sub(190));
        let n = self.sizes.len().max(1) as f64;
        let hi = self
            .series
            .iter()
            .flat_map(|s| s.samples.iter().flatten())
            .fold(0.0_f64, |a, &b| a.max(b));
        let y1 = if hi > 0.0 { hi * 1.15 } else { 1.0 };
        let mut chart = ChartBuilder::on(&plot)
            .margin_left(10)
            .margin_right(20)
            .margin_bottom(10)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5..n - 0.5, 0.0..y1)
            .map_err(plot_err)?;
        let sizes = self.sizes.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(self.sizes.len().max(1))
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    sizes.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| style::ms(*y))
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .label_style(font(style::TICK_PX))
            .axis_desc_style(font(style::LABEL_PX))
            .draw()
            .map_err(plot_err)?;
        let mut entries = Vec::new();
        for (k, s) in self.series.iter().enumerate() {
            let colour = PALETTE[k % PALETTE.len()];
            // Offset each series a little so bars of equal sizes do not hide each other.
            let dx = (k as f64 - (self.series.len() as f64 - 1.0) / 2.0) * 0.06;
            let medians: Vec<(f64, f64)> = s
                .samples
                .iter()
                .enumerate()
                .filter_map(|(i, v)| median(v).map(|m| (i as f64 + dx, m)))
                .collect();
            chart
                .draw_series(LineSeries::new(medians.clone(), colour.stroke_width(2)))
                .map_err(plot_err)?;
            for (i, v) in s.samples.iter().enumerate() {
                let x = i as f64 + dx;
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let top = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if lo.is_finite() {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(x, lo), (x, top)],
                            colour.stroke_width(1),
                        )))
                        .map_err(plot_err)?;
                }
                chart
                    .draw_series(v.iter().map(|&y| Circle::new((x, y), 3, colour.filled())))
                    .map_err(plot_err)?;
            }
            entries.push((Mark::Line(colour, 2), s.label.clone()));
        }
        entries.push((Mark::Dot(style::GREY), "a trial".into()));
        style::legend(&legend, &entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
