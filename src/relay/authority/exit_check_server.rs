//! The exit check's target: a small TCP server the authority runs itself. A client sends a
//! 32-byte nonce and gets [`CHECK_LEN`] bytes that only this server (and the scanner in the
//! same process) can compute, then the connection closes (docs/protocol.md §6.15.2).
//!
//! The content is a ChaCha20 keystream under a key derived from a per-server secret and
//! the nonce: an exit cannot produce it without the secret, and a fresh nonce per check
//! means an answer seen once is worth nothing later.

// Used by exit_check.rs, which the authority's vote code (issue 18's BadExit) calls into;
// until that is merged, only the tests do.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use hkdf::Hkdf;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::debug;
use zeroize::Zeroizing;

use crate::sync::lock;

/// Bytes of the nonce a check sends.
pub(crate) const NONCE_LEN: usize = 32;
/// Bytes of content answered to each nonce: enough that a rewriting exit is caught by
/// content, small enough that a round over every exit stays cheap (64 KiB per exit).
pub(crate) const CHECK_LEN: usize = 64 * 1024;
/// Domain separation of the content key.
const CONTENT_LABEL: &[u8] = b"allium exit-check content v1";

/// A nonce of one check.
pub(crate) type Nonce = [u8; NONCE_LEN];

/// What a server holds so that its content cannot be computed elsewhere.
#[derive(Clone)]
pub(crate) struct CheckSecret(Arc<Zeroizing<[u8; 32]>>);

impl std::fmt::Debug for CheckSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckSecret(..)")
    }
}

impl CheckSecret {
    /// A fresh random secret.
    pub(crate) fn random() -> Self {
        let mut s = Zeroizing::new([0u8; 32]);
        rand::fill(&mut s[..]);
        CheckSecret(Arc::new(s))
    }

    /// The [`CHECK_LEN`] bytes answered to `nonce`: a ChaCha20 keystream under
    /// HKDF-SHA256(salt = label, ikm = secret, info = nonce).
    pub(crate) fn content(&self, nonce: &Nonce) -> Vec<u8> {
        let mut key = Zeroizing::new([0u8; 32]);
        let hk = Hkdf::<Sha256>::new(Some(CONTENT_LABEL), &self.0[..]);
        // 32 bytes is far below HKDF-SHA256's limit of 8160, so this cannot fail; the
        // zero key it would leave would fail every check rather than pass a forged one.
        let _ = hk.expand(nonce, &mut key[..]);
        let mut cipher = ChaCha20::new(&(*key).into(), &[0u8; 12].into());
        let mut out = vec![0u8; CHECK_LEN];
        cipher.apply_keystream(&mut out);
        out
    }
}

/// Bounds of the server: what a flood of connections can hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckServerLimits {
    /// Connections served at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Time a connection has to send its whole nonce.
    pub nonce_timeout: Duration,
    /// Time to send the whole answer (a client that does not read is dropped).
    pub send_timeout: Duration,
    /// Connections one address may hold at once (exits are checked a few at a time).
    pub per_address: usize,
}

impl Default for CheckServerLimits {
    fn default() -> Self {
        CheckServerLimits {
            // A round runs a few checks at once; the rest of the slots absorb strangers.
            max_connections: 32,
            nonce_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            per_address: 4,
        }
    }
}

/// A running check server. Dropping it stops the accept loop (connections being served
/// finish on their own, bounded by the timeouts).
#[derive(Debug)]
pub(crate) struct ExitCheckServer {
    addr: SocketAddr,
    secret: CheckSecret,
    /// Read only by the tests' [`ExitCheckServer::active`].
    #[cfg_attr(not(test), allow(dead_code))]
    slots: Arc<Semaphore>,
    #[cfg_attr(not(test), allow(dead_code))]
    limits: CheckServerLimits,
    /// Connections closed unserved (server full, or their address over its share).
    turned_away: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for ExitCheckServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ExitCheckServer {
    /// Binds `bind` (port 0: an ephemeral port) and starts serving with a fresh secret.
    pub(crate) async fn start(
        bind: SocketAddr,
        limits: CheckServerLimits,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let secret = CheckSecret::random();
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let turned_away = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            secret.clone(),
            Arc::clone(&slots),
            limits,
            Arc::clone(&turned_away),
        ));
        Ok(ExitCheckServer {
            addr,
            secret,
            slots,
            limits,
            turned_away,
            task,
        })
    }

    /// The address the server listens on (what exits are asked to connect to).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections closed unserved since the server started.
    pub(crate) fn turned_away(&self) -> u64 {
        self.turned_away.load(Ordering::Relaxed)
    }

    /// The content this server answers to `nonce`.
    pub(crate) fn expected(&self, nonce: &Nonce) -> Vec<u8> {
        self.secret.content(nonce)
    }

    /// Connections being served now.
    #[cfg(test)]
    pub(crate) fn active(&self) -> usize {
        self.limits
            .max_connections
            .max(1)
            .saturating_sub(self.slots.available_permits())
    }
}

/// One connection's hold on its peer address's share of the slots.
struct PeerSlot {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PeerSlot {
    fn take(peers: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut map = lock(peers);
        let n = map.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: Arc::clone(peers),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = lock(&self.peers);
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    secret: CheckSecret,
    slots: Arc<Semaphore>,
    limits: CheckServerLimits,
    turned_away: Arc<AtomicU64>,
) {
    let peers: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically EMFILE under a flood; back off briefly.
                debug!("exit check server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // One address may hold a few slots, not all: a flood from one host cannot make
        // every exit's check fail.
        let Some(per_peer) = PeerSlot::take(&peers, peer.ip(), limits.per_address) else {
            turned_away.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // Every slot is taken: close at once rather than queue (and say so: the
            // checker does not blame exits for failures in such a round).
            turned_away.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let secret = secret.clone();
        tokio::spawn(async move {
            if let Err(why) = serve(stream, &secret, limits).await {
                debug!("exit check server: connection ended: {why}");
            }
            drop(permit);
            drop(per_peer);
        });
    }
}

/// One connection: exactly [`NONCE_LEN`] bytes in, [`CHECK_LEN`] bytes out, close.
async fn serve(
    mut stream: TcpStream,
    secret: &CheckSecret,
    limits: CheckServerLimits,
) -> Result<(), String> {
    let mut nonce = [0u8; NONCE_LEN];
    match tokio::time::timeout(limits.nonce_timeout, stream.read_exact(&mut nonce)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("no whole nonce: {e}")),
        Err(_) => return Err("no nonce in time".into()),
    }
    let content = secret.content(&nonce);
    let send = async {
        stream.write_all(&content).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(limits.send_timeout, send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("sending the answer: {e}")),
        Err(_) => Err("answer not taken in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_HANG: Duration = Duration::from_secs(60);

    async fn server(limits: CheckServerLimits) -> ExitCheckServer {
        ExitCheckServer::start("127.0.0.1:0".parse().unwrap(), limits)
            .await
            .unwrap()
    }

    /// Everything the server sends on `s` until it closes.
    async fn read_all(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(NO_HANG, s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    #[test]
    fn content_is_deterministic_per_secret_and_nonce() {
        let secret = CheckSecret::random();
        let a = secret.content(&[1; NONCE_LEN]);
        assert_eq!(a.len(), CHECK_LEN);
        assert_eq!(a, secret.content(&[1; NONCE_LEN]));
        assert_ne!(a, secret.content(&[2; NONCE_LEN]));
        // Another server (another secret) answers the same nonce differently.
        assert_ne!(a, CheckSecret::random().content(&[1; NONCE_LEN]));
        // Not a constant or short-period stream.
        assert_ne!(a[..32], a[32..64]);
    }

    #[tokio::test]
    async fn answers_a_nonce_with_the_expected_content_then_closes() {
        let server = server(CheckServerLimits::default()).await;
        let nonce = [7u8; NONCE_LEN];
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(&nonce).await.unwrap();
        let got = read_all(&mut s).await;
        assert_eq!(got, server.expected(&nonce));
    }

    #[tokio::test]
    async fn a_short_nonce_gets_no_answer() {
        let server = server(CheckServerLimits::default()).await;
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(&[7u8; NONCE_LEN - 1]).await.unwrap();
        s.shutdown().await.unwrap();
        assert!(read_all(&mut s).await.is_empty());
    }

    #[tokio::test]
    async fn a_slow_client_is_dropped_and_its_slot_freed() {
        let limits = CheckServerLimits {
            max_connections: 1,
            nonce_timeout: Duration::from_millis(200),
            ..CheckServerLimits::default()
        };
        let server = server(limits).await;
        let mut slow = TcpStream::connect(server.local_addr()).await.unwrap();
        slow.write_all(&[1u8; 10]).await.unwrap();
        // Never sends the rest: the server closes without answering.
        assert!(read_all(&mut slow).await.is_empty());
        // The one slot is free again: a proper check is answered.
        let nonce = [3u8; NONCE_LEN];
        let deadline = tokio::time::Instant::now() + NO_HANG;
        loop {
            let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
            let _ = s.write_all(&nonce).await;
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            if got == server.expected(&nonce) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "slot never freed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_connection_flood_is_bounded() {
        let limits = CheckServerLimits {
            max_connections: 4,
            nonce_timeout: NO_HANG,
            ..CheckServerLimits::default()
        };
        let server = server(limits).await;
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(TcpStream::connect(server.local_addr()).await.unwrap());
        }
        let deadline = tokio::time::Instant::now() + NO_HANG;
        while server.active() < 4 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Every slot is held by a silent connection: more are closed at once, unanswered,
        // long before the silent ones time out.
        for _ in 0..20 {
            let mut extra = TcpStream::connect(server.local_addr()).await.unwrap();
            let _ = extra.write_all(&[1u8; NONCE_LEN]).await;
            let mut got = Vec::new();
            let _ = tokio::time::timeout(NO_HANG, extra.read_to_end(&mut got))
                .await
                .unwrap();
            assert!(got.is_empty());
        }
        assert_eq!(server.active(), 4);
        // A held connection that sends its nonce is still served in full.
        let nonce = [9u8; NONCE_LEN];
        let mut first = held.remove(0);
        first.write_all(&nonce).await.unwrap();
        assert_eq!(read_all(&mut first).await, server.expected(&nonce));
    }

    /// The attacker keeps connections open from one address to make every exit's check
    /// fail: it gets `per_address` slots, the rest of the server stays free for exits, and
    /// every connection turned away is counted (the checker then blames no exit).
    #[tokio::test]
    async fn one_address_cannot_take_every_slot() {
        let limits = CheckServerLimits {
            max_connections: 8,
            per_address: 2,
            nonce_timeout: NO_HANG,
            ..CheckServerLimits::default()
        };
        let server = server(limits).await;
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(TcpStream::connect(server.local_addr()).await.unwrap());
        }
        let deadline = tokio::time::Instant::now() + NO_HANG;
        while server.turned_away() < 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "extra connections not turned away"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.active(), 2);
        // Another address (an exit) is still served.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut exit = socket.connect(server.local_addr()).await.unwrap();
        let nonce = [7u8; NONCE_LEN];
        exit.write_all(&nonce).await.unwrap();
        assert_eq!(read_all(&mut exit).await, server.expected(&nonce));
    }
}
