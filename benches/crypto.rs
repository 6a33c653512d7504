//! Per-cell and per-handshake costs of the crypto core. Run with
//! `cargo bench --bench crypto`; figures are recorded in docs/PERFORMANCE.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::Duration;

use allium::cell::consts::{CELL_LEN, RELAY_BODY_LEN, RELAY_TAG_LEN};
use allium::crypto::circuit_keys::CIRCUIT_KEYS_LEN;
use allium::crypto::{
    client_handshake_start, relay_handshake, CellKind, CircuitKeys, ClientLayers, IdentityKeypair,
    OnionKeyCert, OnionKeypair, RelayCrypto, RelayOnionKeys,
};
use allium::link::{RecordCipher, RECORD_LEN};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn keys(i: u8) -> CircuitKeys {
    let block: [u8; CIRCUIT_KEYS_LEN] = core::array::from_fn(|j| (j as u8) ^ i.wrapping_mul(37));
    CircuitKeys::from_bytes(&block)
}

fn body() -> [u8; RELAY_BODY_LEN] {
    let mut b = [0u8; RELAY_BODY_LEN];
    b[RELAY_TAG_LEN..].fill(0x42);
    b
}

fn layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("layer");
    g.throughput(Throughput::Elements(1));

    // One relay's layer on a forward cell it passes on (the common case at a guard or
    // middle). Counters advance every iteration, exactly as in real use.
    let mut relay = RelayCrypto::new(&keys(1));
    let mut b = body();
    g.bench_function("relay_decrypt_forward", |bench| {
        bench.iter(|| black_box(relay.decrypt_forward(CellKind::Relay, black_box(&mut b))))
    });
    // One relay's layer on a backward cell it passes on.
    let mut relay = RelayCrypto::new(&keys(3));
    let mut b = body();
    g.bench_function("relay_encrypt_backward", |bench| {
        bench.iter(|| black_box(relay.encrypt_backward(black_box(&mut b))))
    });

    // The last hop recognising forward cells: the layer plus the per-cell key update.
    let k = keys(4);
    let mut relay = RelayCrypto::new(&k);
    let mut client = ClientLayers::new();
    let _ = client.push_hop(&k);
    g.bench_function("forward_originate_and_recognise", |bench| {
        bench.iter(|| {
            let mut b = body();
            let _ = client.encrypt_forward(&mut b, 0, CellKind::Relay);
            black_box(relay.decrypt_forward(CellKind::Relay, black_box(&mut b)))
        })
    });

    // A whole relay hop for one forward cell: open the incoming link record, run the
    // layer, seal the outgoing record (what a middle relay spends per cell on crypto).
    let mut relay = RelayCrypto::new(&keys(5));
    let mut sealer = RecordCipher::new(&[1; 32]);
    let mut opener = RecordCipher::new(&[1; 32]);
    let mut out = RecordCipher::new(&[2; 32]);
    let mut records: Vec<[u8; RECORD_LEN]> = Vec::new();
    g.bench_function("relay_hop_link_open_layer_seal", |bench| {
        bench.iter_custom(|iters| {
            // Sealing the input records is the previous hop's work: done outside the clock.
            records.clear();
            for _ in 0..iters {
                let mut r = [0u8; RECORD_LEN];
                r[5..CELL_LEN].fill(0x42);
                let _ = sealer.seal(&mut r);
                records.push(r);
            }
            let start = std::time::Instant::now();
            for r in records.iter_mut() {
                let _ = opener.open(r);
                let mut body = [0u8; RELAY_BODY_LEN];
                body.copy_from_slice(&r[5..CELL_LEN]);
                let _ = relay.decrypt_forward(CellKind::Relay, &mut body);
                r[5..CELL_LEN].copy_from_slice(&body);
                let _ = out.seal(black_box(r));
            }
            start.elapsed()
        })
    });

    // Relay adds its layer to a backward cell; the client removes it and recognises it.
    let k = keys(2);
    let mut relay = RelayCrypto::new(&k);
    let mut client = ClientLayers::new();
    let _ = client.push_hop(&k);
    g.bench_function("backward_originate_and_recognise", |bench| {
        bench.iter(|| {
            let mut b = body();
            let _ = relay.originate_backward(&mut b);
            black_box(client.decrypt_backward(black_box(&mut b)))
        })
    });

    let mut client = ClientLayers::new();
    let mut relays = Vec::new();
    for i in 0..3 {
        let k = keys(10 + i);
        let _ = client.push_hop(&k);
        relays.push(RelayCrypto::new(&k));
    }
    let mut b = body();
    g.bench_function("client_wrap_3hop", |bench| {
        bench.iter(|| black_box(client.encrypt_forward(black_box(&mut b), 2, CellKind::Relay)))
    });
    g.bench_function("client_unwrap_3hop_from_last", |bench| {
        bench.iter(|| {
            let mut b = body();
            for r in relays.iter_mut().rev() {
                let _ = r.encrypt_backward(&mut b);
            }
            black_box(client.decrypt_backward(black_box(&mut b)))
        })
    });
    // The relay side of the above, to subtract: three layer additions.
    g.bench_function("relay_encrypt_backward_x3", |bench| {
        bench.iter(|| {
            let mut b = body();
            for r in relays.iter_mut().rev() {
                let _ = r.encrypt_backward(&mut b);
            }
            black_box(b)
        })
    });
    g.finish();
}

fn handshakes(c: &mut Criterion) {
    let mut rng = rand::rng();
    let id = IdentityKeypair::generate(&mut rng);
    let onion = OnionKeypair::generate(&mut rng);
    let cert = OnionKeyCert::sign(&id, onion.public(), u64::MAX);
    let verified = match cert.verify(0) {
        Ok(v) => v,
        Err(e) => panic!("fixture certificate: {e}"),
    };
    let relay_keys = RelayOnionKeys::new(id.public(), onion, None);
    let ext = [7u8; 32];

    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    // A pool of client messages so the relay benchmark measures only the relay side.
    let msgs: Vec<Vec<u8>> = (0..64)
        .filter_map(|_| client_handshake_start(&mut rng, &id.public(), &verified, &ext).ok())
        .map(|(_, m)| m)
        .collect();
    let mut i = 0usize;
    g.bench_function("relay_side", |bench| {
        bench.iter(|| {
            i = (i + 1) % msgs.len();
            black_box(relay_handshake(&mut rng, &relay_keys, &msgs[i], |_| {
                Vec::new()
            }))
        })
    });
    g.bench_function("client_side_full_round_trip", |bench| {
        bench.iter(|| {
            let Ok((state, msg)) = client_handshake_start(&mut rng, &id.public(), &verified, &ext)
            else {
                return;
            };
            if let Ok((_, reply, _)) = relay_handshake(&mut rng, &relay_keys, &msg, |_| Vec::new())
            {
                let _ = black_box(state.finish(&reply));
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    targets = layers, handshakes
}
criterion_main!(benches);
