//! Logic of steps added after the runner's split began; `runner.rs` keeps one thin arm each.

/// The longest stretch without a delivery within `[from_us, to_us]`, given the first-arrival
/// times of one pipeline's events (any order): `(length_us, starts_at_us)`. The edges count:
/// from `from_us` to the first arrival, and from the last arrival to `to_us`.
pub fn longest_gap(arrivals: &[u64], from_us: u64, to_us: u64) -> (u64, u64) {
    let mut inside: Vec<u64> = arrivals
        .iter()
        .copied()
        .filter(|t| (from_us..=to_us).contains(t))
        .collect();
    inside.sort_unstable();
    let mut best = (0, from_us);
    let mut last = from_us;
    for t in inside.into_iter().chain(std::iter::once(to_us)) {
        if t - last > best.0 {
            best = (t - last, last);
        }
        last = t;
    }
    best
}

/// Validation of a `measure_gap` step against the marks recorded by earlier steps.
pub fn check_gap(
    g: &crate::step::MeasureGapArgs,
    marks: &std::collections::HashSet<String>,
) -> Result<(), String> {
    if !crate::step::is_name(&g.name) || !g.name.ends_with("_ms") {
        return Err(format!(
            "timing name '{}' must be a name ending in _ms",
            g.name
        ));
    }
    for mark in [&g.from, &g.to] {
        if !marks.contains(mark) {
            return Err(format!("mark '{mark}' is not recorded by an earlier step"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_silence_counts_the_edges() {
        assert_eq!(longest_gap(&[], 10, 50), (40, 10));
        assert_eq!(longest_gap(&[30, 12, 14, 99], 10, 50), (20, 30));
        assert_eq!(longest_gap(&[12, 48], 10, 50), (36, 12));
    }
}
