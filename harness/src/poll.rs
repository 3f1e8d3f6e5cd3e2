//! The one bounded wait: ask until a condition holds, or fail with what was last seen.

use std::fmt::Display;
use std::time::Duration;

use anyhow::bail;

use crate::backend::{now_us, WallUs};

/// Interval between polls of a wait. With server-side event timestamps the poll rate bounds
/// only how soon the harness moves on, not the precision of a figure; 20 ms keeps both small.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// One attempt's outcome: the condition holds (with its value), or not yet (with what was seen).
pub enum Poll<T> {
    Ready(T),
    Pending(String),
}

/// A value observed by a poll, with when: the moment the successful attempt's answer was in
/// (the condition held by then), and how long before that the previous (unsuccessful) answer
/// came in (it did not hold then) — the observation's resolution.
#[derive(Debug, Clone)]
pub struct Observed<T> {
    pub value: T,
    pub at_us: WallUs,
    /// `at_us` minus the end of the previous attempt (0 when the first attempt succeeded: the
    /// condition already held when the wait began).
    pub resolution_us: u64,
}

/// Ask `attempt` every [`POLL_INTERVAL`] until it is ready, at most `timeout`. A hard error
/// from an attempt ends the wait at once; a timeout's error names `what` and the last sighting.
pub async fn poll_until<T>(
    what: impl Display,
    timeout: Duration,
    mut attempt: impl AsyncFnMut() -> anyhow::Result<Poll<T>>,
) -> anyhow::Result<Observed<T>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut previous: Option<WallUs> = None;
    loop {
        let outcome = attempt().await?;
        let answered = now_us();
        match outcome {
            Poll::Ready(value) => {
                return Ok(Observed {
                    value,
                    at_us: answered,
                    resolution_us: previous.map_or(0, |p| answered - p),
                })
            }
            Poll::Pending(seen) => {
                if tokio::time::Instant::now() >= deadline {
                    bail!(
                        "{what}: not within {} ms (last seen: {seen})",
                        timeout.as_millis()
                    );
                }
            }
        }
        previous = Some(answered);
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_on_the_third_attempt_with_the_gap_as_resolution() {
        let mut n = 0;
        let seen = poll_until("three", Duration::from_secs(5), async || {
            n += 1;
            Ok(if n == 3 {
                Poll::Ready(n)
            } else {
                Poll::Pending(format!("n = {n}"))
            })
        })
        .await
        .unwrap();
        assert_eq!(seen.value, 3);
        assert!(seen.resolution_us >= POLL_INTERVAL.as_micros() as u64);
    }

    #[tokio::test]
    async fn a_timeout_names_the_wait_and_the_last_sighting() {
        let err = poll_until("never", Duration::from_millis(50), async || {
            Ok(Poll::<()>::Pending("still no".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "never: not within 50 ms (last seen: still no)"
        );
    }

    #[tokio::test]
    async fn a_hard_error_ends_the_wait_at_once() {
        let mut calls = 0;
        let err = poll_until("x", Duration::from_secs(5), async || {
            calls += 1;
            anyhow::bail!("node exited")
        })
        .await
        .map(|_: Observed<()>| ())
        .unwrap_err();
        assert_eq!(err.to_string(), "node exited");
        assert_eq!(calls, 1);
    }
}
