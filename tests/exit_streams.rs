//! Streams through a 3-hop circuit to a real TCP server on 127.0.0.1: data integrity in
//! both directions over many flow-control windows, half-close, exit policy, failures, and
//! many concurrent streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::SocketAddr;

use allium::cell::{EndReason, TargetAddr};
use allium::dir::ExitPolicy;
use allium::proto::StreamOpenError;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod common;
use common::{exit_circuit as circuit, NO_HANG};

/// A server that answers each connection with `size` pseudo-random bytes after reading
/// the client's request up to EOF; it also returns the SHA-256 of what the client sent.
async fn upload_download_server(
    size: usize,
) -> (SocketAddr, tokio::sync::mpsc::Receiver<[u8; 32]>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                // Read everything the client sends (it half-closes when done)...
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = sock.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                let _ = tx.send(hasher.finalize().into()).await;
                // ...then answer, on the half that is still open.
                sock.write_all(&pattern(size)).await.unwrap();
                sock.shutdown().await.unwrap();
            });
        }
    });
    (addr, rx)
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn loopback() -> TargetAddr {
    TargetAddr::Ip("127.0.0.1".parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_transfer_both_ways_with_half_close() {
    const UP: usize = 3 * 1024 * 1024;
    const DOWN: usize = 8 * 1024 * 1024;
    let _ = tracing_subscriber::fmt()
        .with_env_filter("allium=debug")
        .with_test_writer()
        .try_init();
    let (_relays, circ) = circuit(ExitPolicy::default_exit_allow_loopback()).await;
    let (server, mut uploads) = upload_download_server(DOWN).await;
    let mut stream = circ
        .open_stream(loopback(), server.port(), NO_HANG)
        .await
        .unwrap();
    let up = pattern(UP);
    stream.write_all(&up).await.unwrap();
    // Half-close: the server sees EOF and only then answers on the other direction.
    stream.shutdown().await.unwrap();
    let mut down = Vec::new();
    tokio::time::timeout(NO_HANG, stream.read_to_end(&mut down))
        .await
        .expect("download must finish")
        .unwrap();
    assert_eq!(down.len(), DOWN);
    assert_eq!(Sha256::digest(&down), Sha256::digest(pattern(DOWN)));
    let got = uploads.recv().await.unwrap();
    assert_eq!(got, <[u8; 32]>::from(Sha256::digest(&up)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_streams_complete() {
    let (_relays, circ) = circuit(ExitPolicy::default_exit_allow_loopback()).await;
    let (server, _uploads) = upload_download_server(200_000).await;
    let mut tasks = Vec::new();
    for i in 0..100usize {
        let circ = circ.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = circ
                .open_stream(loopback(), server.port(), NO_HANG)
                .await
                .unwrap();
            s.write_all(&vec![i as u8; 1000 + i]).await.unwrap();
            s.shutdown().await.unwrap();
            let mut down = Vec::new();
            s.read_to_end(&mut down).await.unwrap();
            assert!(
                down == pattern(200_000),
                "stream {i}: got {} bytes",
                down.len()
            );
        }));
    }
    for t in tasks {
        tokio::time::timeout(NO_HANG, t)
            .await
            .expect("no hang")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_right_reason() {
    // The default exit policy refuses loopback.
    let (_relays, circ) = circuit(ExitPolicy::default_exit()).await;
    let (server, _) = upload_download_server(10).await;
    let err = circ
        .open_stream(loopback(), server.port(), NO_HANG)
        .await
        .unwrap_err();
    assert_eq!(err, StreamOpenError::Refused(EndReason::ExitPolicy));
    // A name that resolves to loopback is refused too: the policy applies after resolution.
    let err = circ
        .open_stream(
            TargetAddr::Hostname(allium::cell::Hostname::new("localhost").unwrap()),
            server.port(),
            NO_HANG,
        )
        .await
        .unwrap_err();
    assert_eq!(err, StreamOpenError::Refused(EndReason::ExitPolicy));

    let (_relays, circ) = circuit(ExitPolicy::default_exit_allow_loopback()).await;
    // Nothing listens on this port.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = circ
        .open_stream(loopback(), port, NO_HANG)
        .await
        .unwrap_err();
    assert_eq!(err, StreamOpenError::Refused(EndReason::ConnectRefused));
    // Names are resolved at the exit.
    let mut s = circ
        .open_stream(
            TargetAddr::Hostname(allium::cell::Hostname::new("localhost").unwrap()),
            server.port(),
            NO_HANG,
        )
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut down = Vec::new();
    s.read_to_end(&mut down).await.unwrap();
    assert_eq!(down.len(), 10);
}

#[derive(Debug)]
struct EchoDir;

impl allium::relay::dirserve::DirService for EchoDir {
    fn handle(
        &self,
        req: allium::dir::request::DirRequest,
        _ctx: allium::relay::dirserve::DirContext,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = allium::dir::request::DirResponse> + Send + '_>,
    > {
        Box::pin(async move {
            use allium::dir::request::{DirRequest, DirResponse, DirStatus};
            match req {
                DirRequest::PostDescriptor(body) => DirResponse::ok(body),
                _ => DirResponse::error(DirStatus::NotFound, "nothing here"),
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_requests_ride_begin_dir_streams() {
    use allium::dir::request::{DirRequest, DirStatus};
    use allium::proto::dirclient::dir_request;
    let (relays, circ) = circuit(ExitPolicy::reject_all()).await;
    // The exit serves no directory yet.
    let err = dir_request(&circ, &DirRequest::GetConsensus, NO_HANG)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NotDirectory"), "{err}");
    relays[2].set_dir_service(std::sync::Arc::new(EchoDir));
    let doc = pattern(8 * 1024);
    let resp = dir_request(&circ, &DirRequest::PostDescriptor(doc.clone()), NO_HANG)
        .await
        .unwrap();
    assert_eq!(resp.status, DirStatus::Ok);
    assert!(resp.body == doc);
    // A body larger than any descriptor is refused before it is read or allocated.
    let resp = dir_request(
        &circ,
        &DirRequest::PostDescriptor(pattern(300_000)),
        NO_HANG,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, DirStatus::BadRequest);
    let resp = dir_request(&circ, &DirRequest::GetConsensus, NO_HANG)
        .await
        .unwrap();
    assert_eq!(resp.status, DirStatus::NotFound);
    assert_eq!(resp.reason(), "nothing here");
}
