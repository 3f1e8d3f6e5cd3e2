//! Event payloads as they arrive from the broker: the worker's pipeline (the suite's filter)
//! and the harness collector's decoder of outputs. A bad payload is rejected, never a panic.
#![no_main]

use std::sync::LazyLock;

use cluster::pipeline::vpl::{parse, Program};
use libfuzzer_sys::fuzz_target;

static PROGRAM: LazyLock<Program> = LazyLock::new(|| {
    parse(
        "event SensorReading { sensor_id: str, temperature: float, seq: int }\n\
         stream Input = SensorReading.from(mqtt_1, topic: \"e2e/input/1\")\n\
         stream High = Input.where(temperature > 50.0 and not (sensor_id == \"x\"))\n\
         stream Output = High.to(mqtt_1, topic: \"e2e/output\")",
    )
    .expect("the suite's pipeline parses")
});

fuzz_target!(|data: &[u8]| {
    let _ = PROGRAM.process("e2e/input/1", data);
    let _ = harness::traffic::ledger::decode(data);
});
