//! A tiny HTTP server for the test network, so the printed curl command has something
//! to fetch: `/` returns a short page, `/bytes/N` returns N bytes (at most 1 GiB).
//! `allium demo-server --listen ADDR` runs it on its own (a destination for networks of
//! separate processes or hosts).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Starts the server on 127.0.0.1 (ephemeral port) and returns its address.
pub async fn start() -> std::io::Result<SocketAddr> {
    start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts the server on `addr` (port 0: the OS picks) and returns the bound address.
pub async fn start_on(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut used = 0;
                // Read the request head (bounded).
                while used < buf.len() {
                    match sock.read(&mut buf[used..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => used += n,
                    }
                    if buf[..used].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..used]);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                // `/bytes/N` streams N pattern bytes in chunks (never all in memory).
                let size = match path.strip_prefix("/bytes/").map(str::parse::<u64>) {
                    Some(Ok(n)) if n <= 1 << 30 => Some(n),
                    _ => None,
                };
                let page: &[u8] =
                    b"Hello from the allium test network! This page reached you through three relays.\n";
                let len = size.unwrap_or(page.len() as u64);
                let header = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
                );
                if sock.write_all(header.as_bytes()).await.is_err() {
                    return;
                }
                match size {
                    None => {
                        let _ = sock.write_all(page).await;
                    }
                    Some(n) => {
                        let mut sent = 0u64;
                        let mut chunk = vec![0u8; 64 * 1024];
                        while sent < n {
                            let take = (n - sent).min(chunk.len() as u64) as usize;
                            for (i, b) in chunk.iter_mut().take(take).enumerate() {
                                *b = ((sent + i as u64) % 251) as u8;
                            }
                            if sock
                                .write_all(chunk.get(..take).unwrap_or_default())
                                .await
                                .is_err()
                            {
                                return;
                            }
                            sent += take as u64;
                        }
                    }
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(addr)
}
