//! Onion-service client authorisation (issue 23 item 2, protocol.md §8.4.1):
//! * descriptor level: a listed client reads the inner layer; a client with its own valid
//!   key that is not listed, and one with no key, are refused with their own errors (an
//!   attacker who knows the address learns nothing more); the largest descriptor with the
//!   most clients fits the size bound; an encode→parse→decrypt property;
//! * end to end over an in-process test network with real TCP: the listed client
//!   connects and exchanges bytes with the local target; an unlisted client and one
//!   without a key are told why, through the `Client` API and as SOCKS5 replies 0xF5 and
//!   0xF4.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use allium::client::onion_connect::verify_descriptor_with;
use allium::client::onion_service::{launch, ServiceConfig};
use allium::client::socks_server::{serve_socks, Connector, ProxyConfig};
use allium::client::{Client, ClientConfig, ClientError, OnionConnectError};
use allium::onion::client_auth::MAX_AUTH_CLIENTS;
use allium::onion::descriptor::{
    InnerDescriptor, OnionDescriptorError as E, SignedOnionDescriptor, UncheckedOnionDescriptor,
    MAX_INTRO_LINK_ADDRS, MAX_INTRO_POINTS, MAX_ONION_DESCRIPTOR_LEN,
};
use allium::onion::{BlindedKeypair, ClientAuthPublic, ClientAuthSecret, PeriodParams};
use common::onion::*;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SKEW: u64 = 300;
const NO_HANG: Duration = Duration::from_secs(90);

fn secret(n: u8) -> ClientAuthSecret {
    let mut s = [0u8; 32];
    s[3] = n;
    s[4] = 0x42;
    ClientAuthSecret::from_secret_bytes(&s)
}

fn build(inner: &InnerDescriptor, clients: &[ClientAuthPublic]) -> Vec<u8> {
    let blinded = BlindedKeypair::derive(&service(), period()).unwrap();
    SignedOnionDescriptor::build_for_clients(
        &mut rand::rng(),
        &service(),
        &blinded,
        inner,
        &params(3),
        clients,
    )
    .unwrap()
    .to_bytes()
    .unwrap()
}

fn open(bytes: &[u8], key: Option<&ClientAuthSecret>) -> Result<InnerDescriptor, E> {
    UncheckedOnionDescriptor::parse(bytes)?
        .verify_for_client(&address(), key, &PeriodParams::default(), NOW, SKEW, 0)
        .map(|(_, inner)| inner)
}

#[test]
fn only_listed_clients_read_the_descriptor_and_others_are_told_why() {
    let listed: Vec<_> = (0..3).map(secret).collect();
    let publics: Vec<_> = listed.iter().map(ClientAuthSecret::public).collect();
    let bytes = build(&inner(3, true), &publics);
    for c in &listed {
        assert_eq!(open(&bytes, Some(c)).unwrap(), inner(3, true));
    }
    // Directory relays verify the outer layer as for any descriptor.
    let outer = UncheckedOnionDescriptor::parse(&bytes)
        .unwrap()
        .verify_outer(NOW, SKEW, 0);
    assert!(outer.is_ok());
    // No key: told that one is needed.
    let err = open(&bytes, None).unwrap_err();
    assert!(matches!(err, E::AuthRequired));
    assert_eq!(
        err.to_string(),
        "this onion service requires client authorisation; no key configured for it"
    );
    // An attacker with its own valid key and the address: refused, nothing decrypted.
    let attacker = ClientAuthSecret::generate(&mut rand::rng());
    let err = open(&bytes, Some(&attacker)).unwrap_err();
    assert!(matches!(err, E::AuthNotAccepted));
    assert_eq!(
        err.to_string(),
        "client authorisation key not accepted by this service"
    );
    // The client API's errors say the same.
    let periods = PeriodParams::default();
    let err = verify_descriptor_with(&bytes, &address(), None, &periods, NOW, 0).unwrap_err();
    assert!(matches!(err, OnionConnectError::ClientAuthMissing), "{err}");
    let err =
        verify_descriptor_with(&bytes, &address(), Some(&attacker), &periods, NOW, 0).unwrap_err();
    assert!(
        matches!(err, OnionConnectError::ClientAuthRejected),
        "{err}"
    );
    // A service without client authorisation: a configured key is simply not needed.
    let open_desc = build(&inner(2, false), &[]);
    assert_eq!(open(&open_desc, Some(&attacker)).unwrap(), inner(2, false));
    assert_eq!(open(&open_desc, None).unwrap(), inner(2, false));
}

#[test]
fn the_number_of_clients_is_hidden_up_to_the_padding_and_the_largest_fits() {
    let publics = |n: u8| (0..n).map(|i| secret(i).public()).collect::<Vec<_>>();
    // Even someone who knows the address (and so reads the first layer) sees 16 entries
    // for 0 to 16 clients, and descriptors of the same size: a directory cannot tell a
    // service that authorises clients from one that does not.
    let mut sizes = Vec::new();
    for n in [0, 1, 5, 16, 17] {
        let bytes = build(&inner(3, false), &publics(n));
        let first = UncheckedOnionDescriptor::parse(&bytes)
            .unwrap()
            .verify_outer(NOW, SKEW, 0)
            .unwrap()
            .first_layer(&address())
            .unwrap();
        let entries = first.client_auth.clients.len();
        assert_eq!(entries, if n <= 16 { 16 } else { 32 }, "{n} clients");
        sizes.push(bytes.len());
    }
    eprintln!("descriptor bytes for 0, 1, 5, 16, 17 clients: {sizes:?}");
    assert!(sizes[..4].windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
    // The largest inner layer the format allows, with the most clients.
    let mut big = inner(MAX_INTRO_POINTS as u8, true);
    for (i, ip) in big.intro_points.iter_mut().enumerate() {
        ip.link_addrs = (0..MAX_INTRO_LINK_ADDRS)
            .map(|j| SocketAddr::from(([198, 51, 100, (i * 4 + j) as u8 + 1], 9001)))
            .collect();
    }
    let many = publics(MAX_AUTH_CLIENTS as u8);
    let bytes = build(&big, &many);
    println!(
        "largest descriptor with {MAX_AUTH_CLIENTS} clients: {} bytes",
        bytes.len()
    );
    assert!(bytes.len() <= MAX_ONION_DESCRIPTOR_LEN);
    assert_eq!(open(&bytes, Some(&secret(31))).unwrap(), big);
    let blinded = BlindedKeypair::derive(&service(), period()).unwrap();
    let too_many: Vec<_> = (0..=MAX_AUTH_CLIENTS as u8)
        .map(|i| secret(i).public())
        .collect();
    let err = SignedOnionDescriptor::build_for_clients(
        &mut rand::rng(),
        &service(),
        &blinded,
        &inner(1, false),
        &params(1),
        &too_many,
    )
    .unwrap_err();
    assert!(matches!(err, E::ClientAuth(_)), "{err}");
}

#[test]
fn client_public_keys_have_one_strict_spelling() {
    let public = secret(1).public();
    let text = public.to_string();
    assert!(text.starts_with("x25519:") && text.len() == 7 + 64);
    assert_eq!(text.parse::<ClientAuthPublic>().unwrap(), public);
    for bad in [
        text.to_uppercase(),
        text.replace("x25519:", ""),
        format!(" {text}"),
        format!("{text}\n"),
        format!("{text}0"),
        text[..text.len() - 1].to_string(),
        // A low-order point (zero): every "holder" would share the same secret.
        format!("x25519:{}", "0".repeat(64)),
    ] {
        assert!(bad.parse::<ClientAuthPublic>().is_err(), "{bad:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Encode → parse → decrypt gives back the inner layer for every listed client, the
    /// encoding is canonical, and an unlisted key never decrypts.
    #[test]
    fn encode_parse_decrypt(points in 1u8..=4, pow: bool, n in 0u8..=20, who in 0u8..20) {
        let publics: Vec<_> = (0..n).map(|i| secret(i).public()).collect();
        let bytes = build(&inner(points, pow), &publics);
        let parsed = UncheckedOnionDescriptor::parse(&bytes).unwrap();
        prop_assert_eq!(parsed.signed().to_bytes().unwrap(), bytes.clone());
        let got = open(&bytes, Some(&secret(who)));
        if n == 0 || who < n {
            prop_assert_eq!(got.unwrap(), inner(points, pow));
        } else {
            prop_assert!(matches!(got, Err(E::AuthNotAccepted)));
        }
        prop_assert!(matches!(open(&bytes, Some(&secret(200))), Err(E::AuthNotAccepted)) || n == 0);
    }
}

/// A SOCKS5 request for `host:port` (no auth); returns the reply code.
async fn socks5_reply(proxy: SocketAddr, host: &str, port: u16) -> u8 {
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).await.unwrap();
    reply[1]
}

/// A SOCKS listener in front of `client`.
async fn socks_for(client: &Client) -> SocketAddr {
    let socks = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socks.local_addr().unwrap();
    let connector: Arc<dyn Connector> = Arc::new(client.clone());
    tokio::spawn(serve_socks(
        socks,
        0,
        connector,
        ProxyConfig::default(),
        std::future::pending::<()>(),
    ));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorised_client_connects_and_others_are_told_why() {
    let net = common::net::small_net(6, 1).await;
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = target.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 5];
                if s.read_exact(&mut buf).await.is_ok() {
                    let _ = s.write_all(b"pong!").await;
                }
            });
        }
    });
    let dir = std::env::temp_dir().join(format!("allium-client-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let alice = ClientAuthSecret::generate(&mut rand::rng());
    let mallory = ClientAuthSecret::generate(&mut rand::rng());
    let mut cfg = ClientConfig::new(net.authority_info.clone());
    cfg.prebuilt_circuits = 1;
    let mut svc_cfg = ServiceConfig::new(dir.join("svc.key"), vec![(80, target_addr)]);
    svc_cfg.authorized_clients = vec![secret(9).public(), alice.public()];
    let service = launch(Client::bootstrap(cfg.clone()).await.unwrap(), svc_cfg)
        .await
        .unwrap();
    assert!(service.wait_published(NO_HANG).await, "not published");
    let address = *service.address();
    let host = address.to_string();

    let with_key = |key: &ClientAuthSecret| {
        let mut c = cfg.clone();
        c.onion_client_auth = vec![(address, key.clone())];
        c
    };
    // The listed client: a stream to the target, bytes both ways.
    let visitor = Client::bootstrap(with_key(&alice)).await.unwrap();
    let mut stream = tokio::time::timeout(NO_HANG, visitor.connect(&format!("{host}:80")))
        .await
        .expect("connecting hung")
        .expect("the authorised client could not connect");
    stream.write_all(b"ping!").await.unwrap();
    let mut got = [0u8; 5];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"pong!");

    // A client with its own valid key, not listed.
    let outsider = Client::bootstrap(with_key(&mallory)).await.unwrap();
    let err = tokio::time::timeout(NO_HANG, outsider.connect(&format!("{host}:80")))
        .await
        .expect("connecting hung")
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Onion(OnionConnectError::ClientAuthRejected)
        ),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("client authorisation key not accepted"));
    assert_eq!(
        socks5_reply(socks_for(&outsider).await, &host, 80).await,
        0xF5
    );

    // A client without a key.
    let keyless = Client::bootstrap(cfg.clone()).await.unwrap();
    let err = tokio::time::timeout(NO_HANG, keyless.connect(&format!("{host}:80")))
        .await
        .expect("connecting hung")
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Onion(OnionConnectError::ClientAuthMissing)
        ),
        "{err}"
    );
    assert!(err.to_string().contains("requires client authorisation"));
    assert_eq!(
        socks5_reply(socks_for(&keyless).await, &host, 80).await,
        0xF4
    );

    service.stop();
    net.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `allium onion-auth-keygen`, as a real process: writes a mode-0600 key file, prints the
/// `.auth` line, and never replaces an existing key.
#[test]
fn onion_auth_keygen_writes_a_private_key_and_prints_its_public_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("allium-auth-keygen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("alice.key");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_allium"))
            .args(["onion-auth-keygen", "--key-file"])
            .arg(&key)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let public: ClientAuthPublic = line.trim_end().parse().unwrap();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&key).unwrap().len(), 41);
    let again = run();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not replacing"));
    assert!(line.starts_with(&public.to_string()));
    std::fs::remove_dir_all(&dir).unwrap();
}
