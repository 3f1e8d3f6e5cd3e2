//! The traffic layer end to end against the embedded broker: publisher → stand-in pipeline
//! (a small forwarder playing the three `sensor_filter_N` pipelines) → collector → ledger,
//! with exact counts, including a deliberately dropped, duplicated and leaked event.

mod common;

use std::time::Duration;

use common::rig;
use harness::traffic::ledger::{is_matching, PIPELINE_COUNT};
use harness::traffic::{pipeline_name, Counts};
use tokio::time::Instant;

/// Bound on every delivery wait: loopback delivery takes milliseconds.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait that is expected to run out (a dropped event never arrives): short, to keep the test fast.
const SHORT_DELIVERY_TIMEOUT: Duration = Duration::from_millis(500);
/// Rate and length of the paced run the brief asks for.
const PACED_RATE_PER_S: u32 = 200;
const PACED_RUN: Duration = Duration::from_secs(1);
/// Fewest events the paced run must send: 200/s for 1 s is ~201 (the first tick fires at
/// once); half of that still proves pacing on a loaded 2-core machine.
const PACED_MIN_EVENTS: u64 = 100;
/// Most events the paced run may send: one per 5 ms tick over ~1 s, the first one at once.
const PACED_MAX_EVENTS: u64 = 202;
/// Poll interval while waiting for a duplicate copy already on its way.
const LEDGER_POLL: Duration = Duration::from_millis(10);

fn assert_clean(counts: &Counts, published: u64, expected: u64) {
    assert_eq!(counts.published, published, "{counts:?}");
    assert_eq!(counts.expected, expected, "{counts:?}");
    assert_eq!(counts.delivered, expected, "{counts:?}");
    assert_eq!(counts.lost, 0, "{counts:?}");
    assert_eq!(counts.duplicated, 0, "{counts:?}");
    assert_eq!(counts.unexpected, 0, "{counts:?}");
    assert_eq!(counts.unknown, 0, "{counts:?}");
    assert_eq!(counts.malformed, 0, "{counts:?}");
    assert_eq!(counts.latency_us.len() as u64, expected, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_then_paced_run_are_delivered_exactly() {
    let rig = rig("clean").await;

    let burst = rig.publisher.publish_burst(300).await.expect("burst");
    assert_eq!(burst, 1..301);
    let counts = rig
        .collector
        .await_delivery(burst.clone(), DELIVERY_TIMEOUT)
        .await
        .expect("every expected event of the burst delivered");
    assert_clean(&counts, 300, 150);
    assert_eq!(counts.per_pipeline.len() as u64, PIPELINE_COUNT);
    for index in 1..=PIPELINE_COUNT {
        let pipeline = &counts.per_pipeline[&pipeline_name(index)];
        assert_eq!(
            (pipeline.expected, pipeline.delivered, pipeline.lost),
            (50, 50, 0),
            "{}: {pipeline:?}",
            pipeline_name(index)
        );
        assert_eq!((pipeline.duplicated, pipeline.unexpected), (0, 0));
    }

    let paced = rig.publisher.start_paced(PACED_RATE_PER_S);
    tokio::time::sleep(PACED_RUN).await;
    let run = paced.stop().await.expect("paced run");
    let window = run.seqs();
    assert_eq!(
        window.start, burst.end,
        "windows follow each other, never overlap"
    );
    let sent = window.end - window.start;
    assert!(
        (PACED_MIN_EVENTS..=PACED_MAX_EVENTS).contains(&sent),
        "paced run sent {sent} events"
    );
    // The achieved rate: every event of the window was handed out, over at least the run's
    // length (monotonic clock), and pacing never runs ahead (one event at once, then one per
    // period): sent ≤ 1 + elapsed × rate.
    assert_eq!(run.sent, sent, "{run:?}");
    assert!(run.elapsed_us >= PACED_RUN.as_micros() as u64, "{run:?}");
    let elapsed_s = run.elapsed_us as f64 / 1e6;
    assert!(
        run.achieved_per_s() <= f64::from(PACED_RATE_PER_S) + 1.0 / elapsed_s,
        "{}",
        run.describe()
    );
    assert_eq!(
        rig.ledger.lock().unwrap().history().paced,
        std::slice::from_ref(&run)
    );
    let expected = window.clone().filter(|&seq| is_matching(seq)).count() as u64;
    let counts = rig
        .collector
        .await_delivery(window.clone(), DELIVERY_TIMEOUT)
        .await
        .expect("every expected event of the paced run delivered");
    assert_clean(&counts, sent, expected);

    // The burst's window is untouched by the paced run.
    assert_clean(&rig.ledger.lock().unwrap().counts(burst), 300, 150);
    let mut latency_us = counts.latency_us.clone();
    latency_us.sort_unstable();
    eprintln!(
        "paced latency µs: min {} p50 {} max {}",
        latency_us[0],
        latency_us[latency_us.len() / 2],
        latency_us[latency_us.len() - 1]
    );
    eprintln!(
        "burst 1..301: 150/150 delivered; paced {window:?}: {}, {expected}/{expected} \
         delivered; port {}",
        run.describe(),
        rig.port
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_loss_duplicate_and_leak_are_counted_exactly() {
    let rig = rig("faulty").await;

    // A first clean burst, so the faulty window does not start at 1.
    let first = rig.publisher.publish_burst(30).await.expect("first burst");
    rig.collector
        .await_delivery(first.clone(), DELIVERY_TIMEOUT)
        .await
        .expect("first burst delivered");

    let start = rig.next_seq.load(std::sync::atomic::Ordering::SeqCst);
    let first_even = start + start % 2;
    let (dropped, duplicated, leaked) = (first_even, first_even + 2, first_even + 3);
    {
        let mut faults = rig.faults.lock().unwrap();
        faults.drop.insert(dropped);
        faults.duplicate.insert(duplicated);
        faults.leak.insert(leaked);
    }
    let window = rig.publisher.publish_burst(20).await.expect("faulty burst");
    assert_eq!(window, start..start + 20);

    let error = rig
        .collector
        .await_delivery(window.clone(), SHORT_DELIVERY_TIMEOUT)
        .await
        .expect_err("the dropped event never arrives");
    let message = error.to_string();
    assert!(
        message.contains("9 of 10 expected events") && message.contains(&format!("[{dropped}]")),
        "{message}"
    );

    // The extra copy and the leak were forwarded right behind their originals; allow them a
    // bounded moment in any case.
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let counts = loop {
        let counts = rig.ledger.lock().unwrap().counts(window.clone());
        if (counts.duplicated, counts.unexpected) == (1, 1) || Instant::now() >= deadline {
            break counts;
        }
        tokio::time::sleep(LEDGER_POLL).await;
    };
    assert_eq!(counts.published, 20, "{counts:?}");
    assert_eq!(counts.expected, 10, "{counts:?}");
    assert_eq!(counts.delivered, 9, "{counts:?}");
    assert_eq!(counts.lost, 1, "{counts:?}");
    assert_eq!(counts.duplicated, 1, "{counts:?}");
    assert_eq!(counts.unexpected, 1, "{counts:?}");
    assert_eq!(counts.unknown, 0, "{counts:?}");
    assert_eq!(counts.latency_us.len(), 9, "{counts:?}");
    let dropped_in = &counts.per_pipeline[&harness::traffic::pipeline_of(dropped)];
    assert_eq!(dropped_in.lost, 1, "{dropped_in:?}");

    // The faults stay in their window.
    assert_clean(&rig.ledger.lock().unwrap().counts(first), 30, 15);
    eprintln!("faulty window {window:?}: {message}; counts {counts:?}");

    rig.stop().await;
}
