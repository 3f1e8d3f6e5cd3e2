//! The bench's plot: delivered against offered rate for both paths (top), p50 and p99 latency
//! against offered rate (bottom). PNG and SVG, drawn like the run plots
//! ([`crate::report::plots`]).

use std::path::Path;

use plotters::prelude::*;

use super::drive::{Route, StepRecord};
use super::report::PLOT_STEM;
use super::Throughput;
use crate::report::plots::style::{self, font, Mark, PALETTE};
use crate::report::plots::{draw_both, font as fonts, plot_err, Area};

pub const SIZE: (u32, u32) = (1000, 760);

/// Draw `plots/throughput.{png,svg}` into `run_dir`.
pub fn write(run_dir: &Path, t: &Throughput) -> anyhow::Result<()> {
    fonts::ensure_registered()?;
    let dir = run_dir.join(crate::report::plots::DIR);
    std::fs::create_dir_all(&dir)?;
    draw_both(
        &dir.join(format!("{PLOT_STEM}.png")),
        &dir.join(format!("{PLOT_STEM}.svg")),
        SIZE,
        |a| draw(a, t),
        |a| draw(a, t),
    )
}

/// Every step of a route, by offered rate.
fn points(t: &Throughput, route: Route) -> Vec<&StepRecord> {
    let mut v: Vec<&StepRecord> = t.steps.iter().filter(|s| s.route == route).collect();
    v.sort_by(|a, b| a.offered_per_s.total_cmp(&b.offered_per_s));
    v
}

fn draw<DB: DrawingBackend>(root: &Area<DB>, t: &Throughput) -> anyhow::Result<()> {
    let caption = format!(
        "Each point a step of {} ms (ramp, 50 % and 90 % steps): offered = events handed to the \
         publisher per second; delivered = events back at the collector by the step's end + {} ms \
         per second (pipelines: the half passing the filter, so ×2 to compare with the input); \
         latency = arrival − send stamp. Run {}, {} backend.",
        t.config.settings.step_ms, t.config.settings.latency_bound_ms, t.run_id, t.config.backend
    );
    let body = style::header(
        root,
        "Throughput: broker alone and through the pipelines",
        &caption,
    )?;
    let (plots, legend_area) = body.split_horizontally(body.dim_in_pixel().0 - 200);
    let (top, bottom) = plots.split_vertically(plots.dim_in_pixel().1 / 2);
    let x_max = t
        .steps
        .iter()
        .map(|s| s.offered_per_s.max(f64::from(s.target_per_s)))
        .fold(1.0, f64::max)
        * 1.05;
    let colour = |route| match route {
        Route::Broker => PALETTE[0],
        Route::Pipelines => PALETTE[1],
    };

    // Delivered (input-equivalent for the pipelines) against offered.
    let y_max = x_max;
    let mut chart = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("offered (events/s)")
        .y_desc("delivered (input events/s)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(font(style::TICK_PX))
        .axis_desc_style(font(style::LABEL_PX))
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 0.0), (x_max, x_max)],
            style::GREY.stroke_width(1),
        ))
        .map_err(plot_err)?;
    for route in [Route::Broker, Route::Pipelines] {
        let factor = if route == Route::Pipelines { 2.0 } else { 1.0 };
        let pts: Vec<(f64, f64)> = points(t, route)
            .iter()
            .map(|s| (s.offered_per_s, s.delivered_per_s * factor))
            .collect();
        let c = colour(route);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(plot_err)?;
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(plot_err)?;
    }

    // Latency against offered.
    let lat_max = t
        .steps
        .iter()
        .filter_map(|s| s.p99_ms)
        .fold(1.0, f64::max)
        .min(t.config.settings.latency_bound_ms * 4.0)
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..lat_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("offered (events/s)")
        .y_desc("latency (ms)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style(font(style::TICK_PX))
        .axis_desc_style(font(style::LABEL_PX))
        .draw()
        .map_err(plot_err)?;
    let bound = t.config.settings.latency_bound_ms;
    if bound <= lat_max {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, bound), (x_max, bound)],
                6,
                4,
                PALETTE[4].stroke_width(1),
            ))
            .map_err(plot_err)?;
    }
    for route in [Route::Broker, Route::Pipelines] {
        let c = colour(route);
        for (pick, width) in [(0usize, 1u32), (1, 2)] {
            let pts: Vec<(f64, f64)> = points(t, route)
                .iter()
                .filter_map(|s| {
                    let v = if pick == 0 { s.p50_ms } else { s.p99_ms };
                    v.map(|v| (s.offered_per_s, v.min(lat_max)))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(width)))
                .map_err(plot_err)?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|&p| TriangleMarker::new(p, 2 + 2 * width as i32, c.filled())),
                )
                .map_err(plot_err)?;
        }
    }
    style::legend(
        &legend_area,
        &[
            (Mark::Line(PALETTE[0], 2), "broker alone".into()),
            (Mark::Line(PALETTE[1], 2), "through pipelines".into()),
            (Mark::Line(style::GREY, 1), "delivered = offered".into()),
            (Mark::Triangle(PALETTE[0]), "p99 (thick), p50".into()),
            (
                Mark::Line(PALETTE[4], 1),
                format!("latency bound {bound} ms"),
            ),
        ],
    )?;
    Ok(())
}
