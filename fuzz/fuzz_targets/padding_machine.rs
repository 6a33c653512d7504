//! Bytes → a circuit-padding machine (src/cell/padding_machine.rs), as a relay parses the
//! one a client asks it to run. Must never panic; what parses re-encodes to exactly the
//! input (the encoding has one form); and running it for a few simulated seconds never
//! sends more than its cap.
#![no_main]

use allium::cell::padding_machine::PaddingMachine;
use allium::proto::padding::{PaddingEvent, PaddingRuntime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = PaddingMachine::parse(data) else {
        return;
    };
    assert_eq!(m.encode().expect("a parsed machine re-encodes"), data);
    let cap = m.max_padding;
    let mut rng = rand::rng();
    let mut now = tokio::time::Instant::now();
    let mut rt = PaddingRuntime::start(m, now, &mut rng);
    let events = [
        PaddingEvent::Sent,
        PaddingEvent::Received,
        PaddingEvent::PaddingReceived,
    ];
    let mut sent = 0u32;
    for step in 0..2000usize {
        if let Some(e) = events.get(step % 7) {
            rt.on_event(*e, now, &mut rng);
        }
        while rt.poll_due(now, &mut rng) {
            sent += 1;
            assert!(
                sent <= u32::from(cap),
                "more padding than the machine's cap"
            );
        }
        now += std::time::Duration::from_millis(5);
    }
});
