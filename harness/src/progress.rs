//! Progress of a run, as it happens: the phase, trial and step, events published and
//! delivered, elapsed time.
//!
//! Three renderings, chosen once by the CLI ([`install`]):
//! - a terminal (stderr is a TTY): an indicatif spinner line redrawn in place, a line per
//!   finished trial printed above it;
//! - not a terminal: a plain line per finished step, and per finished trial;
//! - `--format json`: one JSON object per line on stdout ([`Event`], tagged by `event`).
//!
//! The runner reports through free functions ([`trial_started`], [`step_started`], …) to a
//! process-wide sink, as `tracing` does; with none installed (tests, library use) they do nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::record::TrialRecord;
use crate::traffic::Ledger;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live line on the terminal.
    Terminal,
    /// A line per step on stderr.
    Plain,
    /// A JSON object per line on stdout.
    Json,
}

impl Mode {
    /// Terminal when stderr is one, else plain; JSON when asked.
    pub fn detect(json: bool) -> Mode {
        if json {
            Mode::Json
        } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Mode::Terminal
        } else {
            Mode::Plain
        }
    }
}

/// One progress event; in JSON mode each is printed as one line (`{"event":"step_finished",…}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    TrialStarted {
        phase: String,
        name: String,
        trial: u32,
        trials: u32,
        elapsed_s: f64,
    },
    StepStarted {
        phase: String,
        trial: u32,
        /// 1-based.
        step: usize,
        steps: usize,
        action: String,
        summary: String,
        elapsed_s: f64,
    },
    StepFinished {
        phase: String,
        trial: u32,
        step: usize,
        steps: usize,
        action: String,
        ok: bool,
        duration_ms: f64,
        note: String,
        /// Matching events published so far in the run, and of those the ones delivered.
        published: u64,
        delivered: u64,
        elapsed_s: f64,
    },
    TrialFinished {
        phase: String,
        name: String,
        trial: u32,
        trials: u32,
        status: String,
        duration_s: f64,
        details: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        elapsed_s: f64,
    },
}

/// Where the current trial and step are; what the live line shows.
#[derive(Debug, Default, Clone)]
struct Position {
    phase: String,
    name: String,
    trial: u32,
    trials: u32,
    step: usize,
    steps: usize,
    action: String,
}

/// The run's ledger and its publisher's next seq.
type Traffic = (Arc<Mutex<Ledger>>, Arc<AtomicU64>);

struct Sink {
    mode: Mode,
    started: Instant,
    position: Mutex<Position>,
    traffic: Mutex<Option<Traffic>>,
    bar: Option<ProgressBar>,
    stop: AtomicBool,
}

static SINK: OnceLock<Arc<Sink>> = OnceLock::new();

/// Start showing progress in `mode` (once per process; later calls are ignored). Returns a
/// guard that clears the live line when dropped.
pub fn install(mode: Mode) -> Guard {
    let bar = (mode == Mode::Terminal).then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar
    });
    let sink = Arc::new(Sink {
        mode,
        started: Instant::now(),
        position: Mutex::new(Position::default()),
        traffic: Mutex::new(None),
        bar,
        stop: AtomicBool::new(false),
    });
    if SINK.set(sink.clone()).is_err() {
        return Guard { ticker: None };
    }
    // The live line's clock and counts move between steps too: redraw it 4 times a second.
    let ticker = (mode == Mode::Terminal).then(|| {
        std::thread::spawn(move || {
            while !sink.stop.load(Ordering::Relaxed) {
                sink.redraw();
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    });
    Guard { ticker }
}

/// Clears the live line and stops its redraws.
pub struct Guard {
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("progress::Guard")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(sink) = SINK.get() {
            sink.stop.store(true, Ordering::Relaxed);
            if let Some(bar) = &sink.bar {
                bar.finish_and_clear();
            }
        }
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// The run's traffic, once it starts: the ledger (deliveries) and the publisher's next seq
/// (every seq below it was sent or is being sent; the even ones match the filter).
pub fn watch_traffic(ledger: Arc<Mutex<Ledger>>, next_seq: Arc<AtomicU64>) {
    if let Some(sink) = SINK.get() {
        *lock(&sink.traffic) = Some((ledger, next_seq));
    }
}

pub fn trial_started(phase: &str, name: &str, trial: u32, trials: u32, steps: usize) {
    let Some(sink) = SINK.get() else { return };
    *lock(&sink.position) = Position {
        phase: phase.into(),
        name: name.into(),
        trial,
        trials,
        step: 0,
        steps,
        action: String::new(),
    };
    sink.emit(Event::TrialStarted {
        phase: phase.into(),
        name: name.into(),
        trial,
        trials,
        elapsed_s: sink.elapsed_s(),
    });
}

/// Step `index` (0-based) of the current trial started.
pub fn step_started(index: usize, action: &str, summary: &str) {
    let Some(sink) = SINK.get() else { return };
    let p = {
        let mut p = lock(&sink.position);
        p.step = index + 1;
        p.action = action.into();
        p.clone()
    };
    sink.emit(Event::StepStarted {
        phase: p.phase,
        trial: p.trial,
        step: p.step,
        steps: p.steps,
        action: action.into(),
        summary: summary.into(),
        elapsed_s: sink.elapsed_s(),
    });
}

/// The current step finished after `duration`, with what it observed (or why it failed).
pub fn step_finished(ok: bool, duration: Duration, note: &str) {
    let Some(sink) = SINK.get() else { return };
    let p = lock(&sink.position).clone();
    let (published, delivered) = sink.totals();
    sink.emit(Event::StepFinished {
        phase: p.phase,
        trial: p.trial,
        step: p.step,
        steps: p.steps,
        action: p.action,
        ok,
        duration_ms: (duration.as_secs_f64() * 1e6).round() / 1e3,
        note: note.into(),
        published,
        delivered,
        elapsed_s: sink.elapsed_s(),
    });
}

pub fn trial_finished(t: &TrialRecord) {
    let Some(sink) = SINK.get() else { return };
    sink.emit(Event::TrialFinished {
        phase: t.id.clone(),
        name: t.name.clone(),
        trial: t.trial,
        trials: t.trials,
        status: t.status.to_string(),
        duration_s: (t.duration_us as f64 / 1e3).round() / 1e3,
        details: t.details.clone(),
        error: t.error.clone(),
        elapsed_s: sink.elapsed_s(),
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sink {
    fn elapsed_s(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0
    }

    /// (matching events published, of those delivered) so far in the run.
    fn totals(&self) -> (u64, u64) {
        let Some((ledger, next_seq)) = lock(&self.traffic).clone() else {
            return (0, 0);
        };
        let sent = next_seq.load(Ordering::Relaxed).saturating_sub(1);
        let delivered = lock(&ledger).delivered_matching();
        (matching_below(sent + 1), delivered)
    }

    fn emit(&self, event: Event) {
        match self.mode {
            Mode::Json => {
                if let Ok(line) = serde_json::to_string(&event) {
                    println!("{line}");
                }
            }
            Mode::Plain => {
                if let Some(line) = plain_line(&event) {
                    eprintln!("{line}");
                }
            }
            Mode::Terminal => {
                if let (Some(bar), Event::TrialFinished { .. }) = (&self.bar, &event) {
                    if let Some(line) = plain_line(&event) {
                        bar.println(line);
                    }
                }
                self.redraw();
            }
        }
    }

    fn redraw(&self) {
        let Some(bar) = &self.bar else { return };
        let p = lock(&self.position).clone();
        let (published, delivered) = self.totals();
        bar.set_message(live_line(&p, published, delivered, self.started.elapsed()));
        bar.tick();
    }
}

/// The terminal's live line.
fn live_line(p: &Position, published: u64, delivered: u64, elapsed: Duration) -> String {
    if p.phase.is_empty() {
        return format!("starting the cluster · {:.0} s", elapsed.as_secs_f64());
    }
    format!(
        "phase {} {} [{}/{}] · step {}/{} {} · events {published} published, {delivered} delivered · {:.0} s",
        p.phase,
        p.name,
        p.trial,
        p.trials,
        p.step,
        p.steps,
        p.action,
        elapsed.as_secs_f64()
    )
}

/// The line a plain (non-terminal) stderr gets for an event, if any.
pub fn plain_line(event: &Event) -> Option<String> {
    match event {
        Event::StepFinished {
            phase,
            trial,
            step,
            steps,
            action,
            ok,
            duration_ms,
            published,
            delivered,
            elapsed_s,
            ..
        } => Some(format!(
            "harness: [{elapsed_s:.1}s] phase {phase} trial {trial} step {step}/{steps} {action}: {} ({duration_ms:.0} ms); events {published} published, {delivered} delivered",
            if *ok { "ok" } else { "FAILED" }
        )),
        Event::TrialFinished {
            phase,
            name,
            trial,
            trials,
            status,
            duration_s,
            details,
            error,
            ..
        } => {
            let mut line = format!(
                "harness: phase {phase} {name} [{trial}/{trials}]: {status} ({duration_s:.1}s) {details}"
            );
            if let Some(e) = error {
                line.push_str(&format!("\n  error: {e}"));
            }
            Some(line)
        }
        _ => None,
    }
}

/// Matching seqs among 1..`next`: seqs start at 1 and the even ones match the filter (the test
/// checks this against [`crate::traffic::ledger::is_matching`]).
fn matching_below(next: u64) -> u64 {
    next.saturating_sub(1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_seqs_are_the_even_ones() {
        assert_eq!(matching_below(1), 0);
        assert_eq!(matching_below(2), 0);
        assert_eq!(matching_below(3), 1);
        assert_eq!(matching_below(101), 50);
        for next in 1..50 {
            let counted = (1..next)
                .filter(|&s| crate::traffic::ledger::is_matching(s))
                .count() as u64;
            assert_eq!(matching_below(next), counted);
        }
    }

    #[test]
    fn json_lines_are_tagged_and_flat() {
        let e = Event::StepFinished {
            phase: "5".into(),
            trial: 2,
            step: 3,
            steps: 14,
            action: "await_leader".into(),
            ok: true,
            duration_ms: 1012.4,
            note: "leader coordinator-2".into(),
            published: 120,
            delivered: 118,
            elapsed_s: 12.3,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "step_finished");
        assert_eq!(v["step"], 3);
        assert_eq!(v["delivered"], 118);
        assert_eq!(
            plain_line(&e).unwrap(),
            "harness: [12.3s] phase 5 trial 2 step 3/14 await_leader: ok (1012 ms); events 120 published, 118 delivered"
        );
    }

    #[test]
    fn live_line_names_phase_step_and_counts() {
        let p = Position {
            phase: "7".into(),
            name: "Traffic During Coordinator Kill".into(),
            trial: 1,
            trials: 3,
            step: 4,
            steps: 13,
            action: "kill".into(),
        };
        assert_eq!(
            live_line(&p, 500, 498, Duration::from_millis(12_400)),
            "phase 7 Traffic During Coordinator Kill [1/3] · step 4/13 kill · events 500 published, 498 delivered · 12 s"
        );
    }
}
