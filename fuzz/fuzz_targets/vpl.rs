//! The VPL parser and checker on any text; a program that parses then evaluates the rest of the
//! input as an event on each of its input topics. Neither may panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Source, then an optional payload after the first NUL byte.
    let (source, payload) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    if let Ok(program) = cluster::pipeline::vpl::parse(source) {
        for topic in program.input_topics() {
            let _ = program.process(&topic, payload);
        }
    }
});
