//! Raw datagrams from the application → the SOCKS5 UDP request header (RFC 1928 §7).
//! Must never panic; whatever parses re-encodes to the same bytes, except a domain that
//! is an IP literal, which re-encodes as that address and then parses to the same datagram.
#![no_main]

use allium::client::socks::{encode_udp_datagram, parse_udp_datagram, MAX_UDP_PAYLOAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_udp_datagram(data) {
        Ok(d) => {
            assert_ne!(d.port, 0);
            assert!(d.data.len() <= MAX_UDP_PAYLOAD);
            let again = encode_udp_datagram(&d.target, d.port, d.data);
            let back = parse_udp_datagram(&again).expect("an encoded datagram parses");
            assert_eq!(back, d);
            if data.get(3) != Some(&3) {
                assert_eq!(again, data);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
