//! A malicious exit operator's connector, for attack tests: exit traffic passes through a
//! proxy of the operator's own that flips one byte of each answer and/or cuts it short.
//! (An exit operator controls its software; [`ExitConnector`] is the seam an honest one
//! uses for an outbound proxy.)

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::relay::ExitConnector;

/// Flips the answer's byte at `flip_at` (xor 1) and/or ends the answer after `cut_after`
/// bytes; what the client sends passes unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeddlingExit {
    /// Offset of the answer byte to flip.
    pub flip_at: Option<usize>,
    /// Answer bytes passed before the connection is closed.
    pub cut_after: Option<usize>,
}

impl ExitConnector for MeddlingExit {
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send + '_>> {
        let meddler = *self;
        Box::pin(async move {
            let up = TcpStream::connect(addr).await?;
            let proxy = TcpListener::bind("127.0.0.1:0").await?;
            let local = proxy.local_addr()?;
            tokio::spawn(async move {
                if let Ok((down, _)) = proxy.accept().await {
                    meddler.relay(down, up).await;
                }
            });
            TcpStream::connect(local).await
        })
    }
}

impl MeddlingExit {
    /// Copies `down` to `up` unchanged and `up` to `down` meddled with.
    async fn relay(self, down: TcpStream, up: TcpStream) {
        let (mut down_r, mut down_w) = down.into_split();
        let (mut up_r, mut up_w) = up.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut down_r, &mut up_w).await;
            let _ = up_w.shutdown().await;
        });
        let mut seen = 0usize;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match up_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut chunk: Vec<u8> = buf.iter().take(n).copied().collect();
            if let Some(b) = self
                .flip_at
                .and_then(|f| f.checked_sub(seen))
                .and_then(|i| chunk.get_mut(i))
            {
                *b ^= 0x01;
            }
            if let Some(keep) = self.cut_after.map(|c| c.saturating_sub(seen)) {
                if keep <= n {
                    chunk.truncate(keep);
                    let _ = down_w.write_all(&chunk).await;
                    break;
                }
            }
            if down_w.write_all(&chunk).await.is_err() {
                break;
            }
            seen += n;
        }
        let _ = down_w.shutdown().await;
    }
}
