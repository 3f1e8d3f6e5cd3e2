//! A late copy fails the phase that published it: against the embedded broker, two trials run
//! through the real publisher, stand-in pipeline and collector, each judged after a drain; then
//! a client publishes an extra copy of one of the first trial's outputs on the output topic, a
//! second after the original, while the second trial runs. The run-wide checker fails the first
//! trial and names its phase and the seq; the same for a copy with one changed field.

mod common;

use std::ops::Range;
use std::time::Duration;

use common::{inject, rig, Rig};
use harness::backend::RaftTimings;
use harness::check::{apply, Allowance};
use harness::history::Rows;
use harness::record::{RunData, RunSettings, Status, TrialRecord};
use harness::traffic::{judge_trial, DrainSettings, SensorReading, Verdict};
use tokio::time::Instant;

/// Bound on every delivery wait: loopback delivery takes milliseconds.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The drain's quiet period: short, the broker is on loopback.
const QUIET: Duration = Duration::from_millis(100);
/// How long after the original's arrival the extra copy is published.
const COPY_DELAY: Duration = Duration::from_secs(1);
/// Poll interval while waiting for the injected copy to be recorded.
const POLL: Duration = Duration::from_millis(10);

/// One trial: a burst, delivered, then judged after a drain.
async fn trial(rig: &Rig, count: u64) -> (Range<u64>, Verdict) {
    let from = rig.ledger.lock().unwrap().rows();
    let seqs = rig.publisher.publish_burst(count).await.expect("burst");
    rig.collector
        .await_delivery(seqs.clone(), DELIVERY_TIMEOUT)
        .await
        .expect("every expected event delivered");
    let verdict = judge(rig, seqs.clone(), from).await;
    (seqs, verdict)
}

async fn judge(rig: &Rig, seqs: Range<u64>, from: Rows) -> Verdict {
    let drain = DrainSettings::quiet(QUIET);
    judge_trial(
        &rig.collector,
        Some(seqs),
        from,
        &Allowance::default(),
        drain,
    )
    .await
}

fn record(id: &str, verdict: &Verdict) -> TrialRecord {
    let status = match verdict.passed() {
        true => Status::Pass,
        false => Status::Fail,
    };
    TrialRecord {
        events: Some(verdict.counts.clone()),
        check: Some(verdict.check.clone()),
        ..TrialRecord::new(id, &format!("phase {id}"), 1, 1, status)
    }
}

fn run_data(rig: &Rig, trials: Vec<TrialRecord>) -> RunData {
    let settings = RunSettings::none(RaftTimings::SEED, QUIET.as_millis() as u64);
    RunData {
        trials,
        history: rig.ledger.lock().unwrap().history().clone(),
        ..RunData::new("late-copies", "test", settings)
    }
}

/// Phase "1" publishes 30 events and passes; during phase "5" (30 more, passes too) a client
/// publishes `change`d copy of phase 1's first matching output a second after the original
/// arrived. Returns the run after the final drain and the run-wide checker, and the copied seq.
async fn late_copy_run(name: &str, change: fn(&mut SensorReading)) -> (RunData, u64) {
    let rig = rig(name).await;
    let (first_seqs, first) = trial(&rig, 30).await;
    assert!(first.passed(), "{:?}", first.findings);
    assert!(first.drained.quiet, "{}", first.drained);

    let from = rig.ledger.lock().unwrap().rows();
    let seqs = rig.publisher.publish_burst(30).await.expect("burst");
    // The extra copy: phase 1's first matching event as its pipeline forwarded it, a second
    // after the original arrived (the instants are the collector's, on the wall clock).
    let (seq, original_at_us, sent_at_us) = {
        let ledger = rig.ledger.lock().unwrap();
        let history = ledger.history();
        let arrival = history
            .arrivals
            .iter()
            .find(|a| first_seqs.contains(&a.seq))
            .copied()
            .expect("phase 1 had outputs");
        let publish = history.publishes.iter().find(|p| p.seq == arrival.seq);
        (
            arrival.seq,
            arrival.at_us,
            publish.expect("published").sent_at_us,
        )
    };
    let mut copy = SensorReading::new(seq, sent_at_us);
    change(&mut copy);
    let now_us = harness::backend::now_us();
    let copy_at_us = original_at_us + COPY_DELAY.as_micros() as u64;
    tokio::time::sleep(Duration::from_micros(copy_at_us.saturating_sub(now_us))).await;
    let arrivals_before = rig.ledger.lock().unwrap().rows().arrivals;
    inject(rig.port, copy.to_json()).await;
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    // Bounded poll: the broker acked the copy, so it is on its way to the collector.
    while rig.ledger.lock().unwrap().rows().arrivals == arrivals_before {
        assert!(
            Instant::now() < deadline,
            "the extra copy reaches the collector"
        );
        tokio::time::sleep(POLL).await;
    }
    rig.collector
        .await_delivery(seqs.clone(), DELIVERY_TIMEOUT)
        .await
        .expect("phase 5 delivered");
    let second = judge(&rig, seqs, from).await;
    assert!(second.passed(), "{:?}", second.findings);

    let final_drain = rig.collector.drain(QUIET, DELIVERY_TIMEOUT).await;
    assert!(final_drain.quiet, "{final_drain}");
    let mut data = run_data(&rig, vec![record("1", &first), record("5", &second)]);
    data.final_drain = Some(final_drain);
    apply(&mut data);
    rig.stop().await;
    (data, seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_copy_a_second_later_fails_the_phase_that_published_it() {
    let (data, seq) = late_copy_run("late-copy", |_| {}).await;
    let tally = data.tally.as_ref().expect("tallied");
    assert_eq!(data.trials[0].status, Status::Fail);
    assert_eq!(data.trials[1].status, Status::Pass);
    assert!(!data.all_passed());
    // The verdict's counts stay what it was judged on; the late copy is tallied apart.
    assert_eq!(data.trials[0].events.as_ref().unwrap().duplicated, 0);
    let t = &tally.trials[0];
    assert_eq!(
        (t.phase.as_str(), t.late_total, t.at_end.duplicated),
        ("1", 1, 1)
    );
    assert_eq!(
        t.findings,
        [
            format!("1 arrival(s) of its events after its verdict: seq {seq} copy 2 during phase 5 [1/1]"),
            format!("after the final drain: duplicated = 1, want 0 (seqs [{seq}])"),
        ]
    );
    assert!(tally.trials[1].findings.is_empty());
    assert!(tally.findings.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_copy_with_a_changed_field_is_named_malformed() {
    let (data, seq) = late_copy_run("late-changed", |r| r.temperature += 1.0).await;
    let tally = data.tally.as_ref().expect("tallied");
    assert_eq!(data.trials[0].status, Status::Fail);
    assert_eq!(data.trials[1].status, Status::Pass);
    let t = &tally.trials[0];
    assert_eq!((t.at_end.duplicated, t.at_end.malformed), (1, 1));
    assert_eq!(
        t.findings,
        [
            format!(
                "1 arrival(s) of its events after its verdict: seq {seq} copy 2, temperature \
                 changed during phase 5 [1/1]"
            ),
            format!("after the final drain: duplicated = 1, want 0 (seqs [{seq}])"),
            format!("after the final drain: malformed = 1, want 0 (seq {seq} copy 2: temperature)"),
        ]
    );
}
