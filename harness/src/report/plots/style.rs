//! What every plot shares: the header (title and a caption saying how it was measured), fonts
//! and colours.

use plotters::prelude::*;

use super::{font::FAMILY, plot_err, Area};

pub const TITLE_PX: u32 = 22;
pub const CAPTION_PX: u32 = 14;
pub const LABEL_PX: u32 = 16;
pub const TICK_PX: u32 = 14;
pub const LEGEND_PX: u32 = 14;

/// Series colours, in order (a colour-blind-safe set: blue, orange, green, purple, red, brown).
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(230, 120, 20),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(214, 39, 40),
    RGBColor(140, 86, 75),
];
pub const GREY: RGBColor = RGBColor(110, 110, 110);

pub fn font(px: u32) -> TextStyle<'static> {
    (FAMILY, px).into_font().into()
}

pub fn bold(px: u32) -> TextStyle<'static> {
    (FAMILY, px, FontStyle::Bold).into_font().into()
}

/// Draw the title and the wrapped caption at the top of `root`; returns the area below them.
pub fn header<'a, DB: DrawingBackend>(
    root: &Area<'a, DB>,
    title: &str,
    caption: &str,
) -> anyhow::Result<Area<'a, DB>> {
    let (width, _) = root.dim_in_pixel();
    // DejaVu Sans averages a little over half its size per character.
    let per_line = ((width as f64 - 30.0) / (CAPTION_PX as f64 * 0.56)) as usize;
    let lines = wrap(caption, per_line.max(20));
    root.draw(&Text::new(title.to_string(), (15, 8), bold(TITLE_PX)))
        .map_err(plot_err)?;
    let mut y = 8 + TITLE_PX as i32 + 6;
    for line in &lines {
        root.draw(&Text::new(
            line.clone(),
            (15, y),
            font(CAPTION_PX).color(&GREY),
        ))
        .map_err(plot_err)?;
        y += CAPTION_PX as i32 + 4;
    }
    Ok(root.split_vertically(y + 4).1)
}

/// Greedy word wrap to at most `width` characters a line.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// How a legend entry is drawn.
#[derive(Debug, Clone, Copy)]
pub enum Mark {
    /// A line of this colour and width.
    Line(RGBColor, u32),
    /// A translucent band (a shaded window).
    Band(RGBAColor),
    /// A short vertical line (an instant).
    Tick(RGBColor),
    Triangle(RGBColor),
    Dot(RGBColor),
}

/// A legend drawn as a column in its own area (outside the plot, so it never hides data).
pub fn legend<DB: DrawingBackend>(
    area: &Area<DB>,
    entries: &[(Mark, String)],
) -> anyhow::Result<()> {
    let row = LEGEND_PX as i32 + 8;
    for (i, (mark, label)) in entries.iter().enumerate() {
        let y = 12 + row * i as i32;
        let (x0, x1, ym) = (8, 30, y + LEGEND_PX as i32 / 2);
        match *mark {
            Mark::Line(c, w) => area.draw(&PathElement::new(
                vec![(x0, ym), (x1, ym)],
                c.stroke_width(w),
            )),
            Mark::Band(c) => area.draw(&Rectangle::new([(x0, ym - 6), (x1, ym + 6)], c.filled())),
            Mark::Tick(c) => area.draw(&PathElement::new(
                vec![(19, ym - 8), (19, ym + 8)],
                c.stroke_width(2),
            )),
            Mark::Triangle(c) => area.draw(&TriangleMarker::new((19, ym), 7, c.filled())),
            Mark::Dot(c) => area.draw(&Circle::new((19, ym), 3, c.filled())),
        }
        .map_err(plot_err)?;
        area.draw(&Text::new(label.clone(), (x1 + 8, y), font(LEGEND_PX)))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// A millisecond value for a tick or legend: `1 008.9` style would need locale; keep it plain.
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_on_words() {
        assert_eq!(
            wrap("kill signal → earliest leader_changed event", 20),
            vec!["kill signal →", "earliest", "leader_changed event"]
        );
        assert_eq!(wrap("", 10), Vec::<String>::new());
        // A word longer than the width gets a line of its own.
        assert_eq!(wrap("a verylongword b", 5), vec!["a", "verylongword", "b"]);
    }
}
