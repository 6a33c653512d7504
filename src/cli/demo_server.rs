//! A tiny HTTP server for the test network, so the printed curl command has something
//! to fetch: `/` returns a short page, `/bytes/N` returns N bytes (at most 1 GiB).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Starts the server on 127.0.0.1 (ephemeral port) and returns its address.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
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
                let body: Vec<u8> = match path.strip_prefix("/bytes/").map(str::parse::<u64>) {
                    Some(Ok(n)) if n <= 1 << 30 => (0..n).map(|i| (i % 251) as u8).collect(),
                    _ => b"Hello from the allium test network! This page reached you through three relays.\n".to_vec(),
                };
                let header = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(header.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(addr)
}
