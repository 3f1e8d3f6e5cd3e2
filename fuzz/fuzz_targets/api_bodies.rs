//! Every coordinator route that takes a body (and the WebSocket's frames), through the same
//! extraction and validation a request goes through: a bad body is a 4xx, never a panic.
#![no_main]

use cluster::coordinator::bodies::{check, BodyRoute};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the route.
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let route = BodyRoute::ALL[pick as usize % BodyRoute::ALL.len()];
    if let Err(e) = check(route, body) {
        assert!(e.status.is_client_error(), "{route:?}: {}", e.status);
    }
});
