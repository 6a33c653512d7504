//! Raw client bytes → SOCKS4/4a/5 and HTTP CONNECT handshakes, split into two reads at a
//! point chosen by the first input byte. Must never panic, and the split must not change
//! the outcome (replies, request, early data, error).
#![no_main]

use allium::client::socks::{
    HttpConnectHandshake, SocksCommand, SocksError, SocksHandshake, SocksRequest, Step,
};
use libfuzzer_sys::fuzz_target;

type Outcome = (Vec<u8>, Option<Result<(SocksRequest, Vec<u8>), SocksError>>);

/// Feeds `reads` in order, following the `Step` protocol.
fn drive(mut feed: impl FnMut(&[u8]) -> Result<Step, SocksError>, reads: &[&[u8]]) -> Outcome {
    let mut replies = Vec::new();
    for (i, read) in reads.iter().enumerate() {
        let mut rest: &[u8] = read;
        loop {
            match feed(rest) {
                Ok(Step::NeedMore) => break,
                Ok(Step::Reply { reply, consumed }) => {
                    assert!(consumed <= rest.len());
                    replies.extend(reply);
                    rest = &rest[consumed..];
                }
                Ok(Step::Done { request, consumed }) => {
                    assert!(consumed <= rest.len());
                    if request.command == SocksCommand::Connect {
                        assert_ne!(request.port, 0);
                    }
                    let mut early = rest[consumed..].to_vec();
                    for later in &reads[i + 1..] {
                        early.extend_from_slice(later);
                    }
                    return (replies, Some(Ok((request, early))));
                }
                Err(e) => {
                    let _ = e.reply();
                    let _ = e.to_string();
                    return (replies, Some(Err(e)));
                }
            }
        }
    }
    (replies, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(data.len());
    let (a, b) = data.split_at(at);

    let mut whole = SocksHandshake::new();
    let mut parts = SocksHandshake::new();
    assert_eq!(
        drive(|x| whole.feed(x), &[data]),
        drive(|x| parts.feed(x), &[a, b]),
        "SOCKS outcome depends on the split"
    );

    let mut whole = HttpConnectHandshake::new();
    let mut parts = HttpConnectHandshake::new();
    assert_eq!(
        drive(|x| whole.feed(x), &[data]),
        drive(|x| parts.feed(x), &[a, b]),
        "HTTP CONNECT outcome depends on the split"
    );
});
