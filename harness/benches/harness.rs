//! Benchmarks of the harness's hot paths (`cargo bench -p harness`): the per-event ledger at
//! 1 M events, decoding an output payload, and recording timings in an HDR histogram.
//! Figures are in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use harness::record::percentiles;
use harness::traffic::ledger::decode;
use harness::traffic::{Ledger, SensorReading};

const EVENTS: u64 = 1_000_000;

/// A ledger of `EVENTS` events, each published (acked) and, when matching, delivered once.
fn full_ledger(outputs: &[(u64, Vec<u8>)]) -> Ledger {
    let mut ledger = Ledger::new();
    record_all(&mut ledger, outputs);
    ledger
}

/// The outputs of the matching half, encoded once, outside the measured loop.
fn outputs() -> Vec<(u64, Vec<u8>)> {
    (1..=EVENTS)
        .filter(|seq| seq % 2 == 0)
        .map(|seq| (seq, SensorReading::new(seq, seq * 10).to_json()))
        .collect()
}

fn record_all(ledger: &mut Ledger, outputs: &[(u64, Vec<u8>)]) {
    for seq in 1..=EVENTS {
        ledger.published(seq, seq * 10, Some(seq * 10 + 500));
    }
    for (seq, payload) in outputs {
        ledger.arrived("e2e/output", seq * 10 + 1_500, payload);
    }
}

fn ledger(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(EVENTS));
    let outputs = outputs();
    g.bench_function("record 1M publishes + 500k deliveries", |b| {
        b.iter_batched_ref(
            Ledger::new,
            |l| record_all(l, &outputs),
            BatchSize::LargeInput,
        )
    });
    let full = full_ledger(&outputs);
    g.bench_function("counts over 1M events", |b| {
        b.iter(|| black_box(full.counts(black_box(1..EVENTS + 1))))
    });
    g.bench_function("progress over 1M events", |b| {
        b.iter(|| black_box(full.progress(black_box(1..EVENTS + 1))))
    });
    g.finish();
}

fn payload(c: &mut Criterion) {
    let mut g = c.benchmark_group("payload");
    g.throughput(Throughput::Elements(1));
    let good = SensorReading::new(123_456, 1_764_000_000_000_000).to_json();
    g.bench_function("decode a faithful output", |b| {
        b.iter(|| black_box(decode(black_box(&good))))
    });
    let changed = br#"{"event_type":"SensorReading","sensor_id":"sensor_3","temperature":75.0,"seq":8,"sent_at_us":1}"#;
    g.bench_function("decode a changed output", |b| {
        b.iter(|| black_box(decode(black_box(changed))))
    });
    g.bench_function("encode an event", |b| {
        b.iter(|| black_box(SensorReading::new(black_box(123_456), 1).to_json()))
    });
    g.finish();
}

fn hdr(c: &mut Criterion) {
    let mut g = c.benchmark_group("hdr");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(EVENTS));
    // Latencies of 1 ms .. ~1 s, spread over the histogram's buckets.
    let values: Vec<u64> = (0..EVENTS)
        .map(|i| 1_000 + (i * 7_919) % 1_000_000)
        .collect();
    g.bench_function("record 1M samples + percentiles", |b| {
        b.iter(|| black_box(percentiles(black_box(&values))))
    });
    g.finish();
}

criterion_group!(benches, ledger, payload, hdr);
criterion_main!(benches);
