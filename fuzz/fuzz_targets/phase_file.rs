//! The phase file loader on any text: an error names file:line, it never panics.
#![no_main]

use std::path::Path;

use harness::phase::{parse, Capabilities};
use harness::step::Fault;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let caps = Capabilities {
        backend: "process",
        coordinators: 3,
        workers: 4,
        broker: true,
        faults: Fault::ALL.to_vec(),
    };
    let _ = parse(Path::new("fuzz.toml"), text, &caps);
});
