//! Benchmarks of the VPL subset (`cargo bench -p cluster`): parsing the seed's pipeline and
//! evaluating it on one event that passes its filter and one that does not.
//! Figures are in BENCHMARKS.md.

use std::hint::black_box;

use cluster::pipeline::vpl;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The seed's pipeline, as the harness deploys it (`sensor_filter_1`).
const SEED_PIPELINE: &str =
    "event SensorReading { sensor_id: str, temperature: float, seq: int }\n\
    stream Input = SensorReading.from(mqtt_1, topic: \"e2e/input/1\")\n\
    stream HighTemp = Input.where(temperature > 50.0)\n\
    stream Output = HighTemp.to(mqtt_1, topic: \"e2e/output\")\n";

fn vpl(c: &mut Criterion) {
    let mut g = c.benchmark_group("vpl");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse the seed pipeline", |b| {
        b.iter(|| black_box(vpl::parse(black_box(SEED_PIPELINE))))
    });
    let program = vpl::parse(SEED_PIPELINE).expect("the seed pipeline parses");
    let hot = br#"{"event_type":"SensorReading","sensor_id":"sensor_4","temperature":75.0,"seq":14,"sent_at_us":1764000000000000}"#;
    let cold = br#"{"event_type":"SensorReading","sensor_id":"sensor_7","temperature":25.0,"seq":7,"sent_at_us":1764000000000000}"#;
    assert_eq!(program.process("e2e/input/1", hot).map(|o| o.len()), Ok(1));
    assert_eq!(program.process("e2e/input/1", cold).map(|o| o.len()), Ok(0));
    g.bench_function("evaluate a matching event", |b| {
        b.iter(|| black_box(program.process("e2e/input/1", black_box(hot))))
    });
    g.bench_function("evaluate a filtered event", |b| {
        b.iter(|| black_box(program.process("e2e/input/1", black_box(cold))))
    });
    g.finish();
}

criterion_group!(benches, vpl);
criterion_main!(benches);
