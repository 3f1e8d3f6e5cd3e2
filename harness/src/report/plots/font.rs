//! The one font every plot is drawn in: DejaVu Sans from the `dejavu` crate, registered with
//! plotters' ab_glyph backend as "sans-serif". No fontconfig, no system fonts: plots render the
//! same on a minimal CI image. SVG needs it too (plotters measures text to lay a chart out).

use std::sync::OnceLock;

use plotters::style::FontStyle;

/// The family name the plots ask for.
pub const FAMILY: &str = "sans-serif";

/// Register the font (once per process); every plot calls this before drawing.
pub fn ensure_registered() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for (style, bytes) in [
                (FontStyle::Normal, dejavu::sans::regular()),
                (FontStyle::Bold, dejavu::sans::bold()),
            ] {
                plotters::style::register_font(FAMILY, style, bytes).map_err(|_| {
                    format!("the DejaVu Sans {} font does not parse", style.as_str())
                })?;
            }
            Ok(())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}
