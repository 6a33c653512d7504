//! The BEGIN_DIR request/response framing (docs/protocol.md §6.12): every request and
//! response survives encode → parse unchanged, arbitrary bytes never panic the parsers and
//! whatever parses re-encodes to the same bytes, and the committed fuzz seeds of the
//! `dir_request` target parse.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use allium::dir::request::{DirRequest, DirResponse, DirStatus, MAX_MEASUREMENT_CHUNK};
use allium::onion::descriptor::MAX_ONION_DESCRIPTOR_LEN;
use proptest::prelude::*;

fn request() -> impl Strategy<Value = DirRequest> {
    prop_oneof![
        Just(DirRequest::GetConsensus),
        proptest::collection::vec(any::<u8>(), 1..2000).prop_map(DirRequest::PostDescriptor),
        any::<u64>().prop_map(|valid_after| DirRequest::GetVote { valid_after }),
        any::<u64>().prop_map(|valid_after| DirRequest::GetSignature { valid_after }),
        proptest::collection::vec(any::<u8>(), 1..=MAX_ONION_DESCRIPTOR_LEN)
            .prop_map(DirRequest::PutOnionDescriptor),
        any::<[u8; 32]>().prop_map(|blinded_key| DirRequest::GetOnionDescriptor { blinded_key }),
        (any::<[u8; 16]>(), 1..=MAX_MEASUREMENT_CHUNK)
            .prop_map(|(token, len)| DirRequest::GetMeasurement { token, len }),
        proptest::collection::btree_set(any::<[u8; 32]>(), 1..64).prop_map(|d| {
            DirRequest::GetMicrodescs {
                digests: d.into_iter().collect(),
            }
        }),
    ]
}

fn response() -> impl Strategy<Value = DirResponse> {
    let status = prop_oneof![
        Just(DirStatus::Ok),
        Just(DirStatus::NotFound),
        Just(DirStatus::Refused),
        Just(DirStatus::BadRequest),
        Just(DirStatus::Busy),
    ];
    (status, proptest::collection::vec(any::<u8>(), 0..3000))
        .prop_map(|(status, body)| DirResponse { status, body })
}

proptest! {
    #[test]
    fn requests_round_trip(req in request()) {
        let bytes = req.encode();
        prop_assert_eq!(DirRequest::parse(&bytes).unwrap(), req);
    }

    #[test]
    fn responses_round_trip(resp in response()) {
        let bytes = resp.encode();
        prop_assert_eq!(DirResponse::parse(&bytes).unwrap(), resp);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_parse_canonically(
        bytes in proptest::collection::vec(any::<u8>(), 0..100),
        kind in 0u8..9,
    ) {
        // Also with a well-formed header, so the body rules are reached.
        let mut framed = vec![kind];
        framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        framed.extend_from_slice(&bytes);
        for input in [&bytes, &framed] {
            if let Ok(req) = DirRequest::parse(input) {
                prop_assert_eq!(&req.encode(), input);
            }
            if let Ok(resp) = DirResponse::parse(input) {
                prop_assert_eq!(&resp.encode(), input);
            }
        }
    }

    #[test]
    fn a_truncated_or_extended_request_is_refused(req in request(), cut in 1usize..6) {
        let bytes = req.encode();
        let short = &bytes[..bytes.len().saturating_sub(cut)];
        prop_assert!(DirRequest::parse(short).is_err());
        let mut long = bytes.clone();
        long.push(0);
        prop_assert!(DirRequest::parse(&long).is_err());
    }
}

#[test]
fn onion_kinds_refuse_bad_bodies() {
    // PUT: empty or over 8 KiB; GET: not exactly 32 bytes.
    for body in [vec![], vec![1; MAX_ONION_DESCRIPTOR_LEN + 1]] {
        let mut bytes = vec![5];
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        assert!(DirRequest::parse(&bytes).is_err());
    }
    for len in [0usize, 31, 33] {
        let mut bytes = vec![6];
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend(std::iter::repeat_n(7u8, len));
        assert!(DirRequest::parse(&bytes).is_err());
    }
}

proptest! {
    #[test]
    fn measurement_lengths_outside_one_to_one_mib_are_refused(
        token in any::<[u8; 16]>(),
        len in prop_oneof![Just(0u32), (MAX_MEASUREMENT_CHUNK + 1)..=u32::MAX],
    ) {
        let mut bytes = vec![7, 0, 0, 0, 20];
        bytes.extend_from_slice(&token);
        bytes.extend_from_slice(&len.to_be_bytes());
        prop_assert!(DirRequest::parse(&bytes).is_err());
    }
}

#[test]
fn fuzz_seeds_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/dir_request");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("response-") {
            assert_eq!(
                DirResponse::parse(&bytes).unwrap().encode(),
                bytes,
                "{name}"
            );
        } else {
            assert_eq!(DirRequest::parse(&bytes).unwrap().encode(), bytes, "{name}");
        }
        n += 1;
    }
    eprintln!("{n} dir_request seeds parse and re-encode");
    assert!(n >= 10);
}
