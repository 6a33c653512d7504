//! A tiny HTTP server for the test network, so the printed curl command has something
//! to fetch: `/` (and any other path) returns a short HTML page, `/bytes/N` returns N
//! bytes (at most 1 GiB). `allium demo-server --listen ADDR` runs it on its own (a
//! destination for networks of separate processes or hosts).
//!
//! Every response names its type (`text/html; charset=utf-8` for the page,
//! `application/octet-stream` for the bytes), so a browser pointed at the testnet's
//! "try it" URL through the proxy shows the page instead of downloading it.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The page served for every path but `/bytes/N`.
const PAGE: &str = "<!DOCTYPE html>\n\
<html lang=\"en\">\n\
<head><meta charset=\"utf-8\"><title>allium test network</title></head>\n\
<body><p>Hello from the allium test network! This page reached you through three relays.</p></body>\n\
</html>\n";
/// Content type of [`PAGE`].
const PAGE_TYPE: &str = "text/html; charset=utf-8";
/// Content type of `/bytes/N`.
const BYTES_TYPE: &str = "application/octet-stream";
/// Largest `N` of `/bytes/N`.
const MAX_BYTES: u64 = 1 << 30;
/// Most bytes of a request head read before answering.
const MAX_HEAD: usize = 4096;
/// Bytes of `/bytes/N` written at a time.
const CHUNK: usize = 64 * 1024;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    /// [`PAGE`].
    Page,
    /// `n` pattern bytes.
    Bytes(u64),
}

impl Resource {
    /// The resource for the request target `path`.
    fn for_path(path: &str) -> Self {
        match path.strip_prefix("/bytes/").map(str::parse::<u64>) {
            Some(Ok(n)) if n <= MAX_BYTES => Resource::Bytes(n),
            _ => Resource::Page,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Resource::Page => PAGE_TYPE,
            Resource::Bytes(_) => BYTES_TYPE,
        }
    }

    fn len(self) -> u64 {
        match self {
            Resource::Page => PAGE.len() as u64,
            Resource::Bytes(n) => n,
        }
    }
}

/// Starts the server on 127.0.0.1 (ephemeral port) and returns its address.
pub async fn start() -> std::io::Result<SocketAddr> {
    start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts the server on `addr` (port 0: the OS picks) and returns the bound address.
pub async fn start_on(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve(sock));
        }
    });
    Ok(addr)
}

/// Answers one request on `sock`, then closes it.
async fn serve(mut sock: TcpStream) {
    let head = read_head(&mut sock).await;
    let head = String::from_utf8_lossy(&head);
    let resource = Resource::for_path(head.split_whitespace().nth(1).unwrap_or("/"));
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: {}\r\nConnection: close\r\n\r\n",
        resource.len(),
        resource.content_type()
    );
    if sock.write_all(header.as_bytes()).await.is_err() {
        return;
    }
    match resource {
        Resource::Page => {
            let _ = sock.write_all(PAGE.as_bytes()).await;
        }
        Resource::Bytes(n) => {
            // Streamed in chunks (never all in memory); byte i is i mod 251.
            let mut sent = 0u64;
            let mut chunk = vec![0u8; CHUNK];
            while sent < n {
                // Only the last chunk is shorter.
                chunk.truncate(usize::try_from(n - sent).unwrap_or(CHUNK));
                for (i, b) in (sent..).zip(chunk.iter_mut()) {
                    *b = (i % 251) as u8;
                }
                if sock.write_all(&chunk).await.is_err() {
                    return;
                }
                sent += chunk.len() as u64;
            }
        }
    }
    let _ = sock.shutdown().await;
}

/// Reads the request head: until the empty line, [`MAX_HEAD`] bytes, the end of the
/// stream or an error, whichever comes first.
async fn read_head<R: AsyncRead + Unpin>(sock: &mut R) -> Vec<u8> {
    let mut head = Vec::with_capacity(MAX_HEAD);
    while head.len() < MAX_HEAD {
        let room = (MAX_HEAD - head.len()) as u64;
        match (&mut *sock).take(room).read_buf(&mut head).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `request` over a real TCP connection and returns the status line, the
    /// headers (names lowercased) and the body.
    async fn fetch(addr: SocketAddr, request: &str) -> (String, Vec<(String, String)>, Vec<u8>) {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        sock.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        sock.read_to_end(&mut response).await.unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete head");
        let head = std::str::from_utf8(&response[..split]).unwrap();
        let body = response[split + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().to_string();
        let headers = lines
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        (status, headers, body)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        let mut values = headers.iter().filter(|(n, _)| n == name);
        let (_, value) = values.next().unwrap_or_else(|| panic!("no {name} header"));
        assert!(values.next().is_none(), "{name} sent twice");
        value
    }

    #[tokio::test]
    async fn the_page_is_served_as_html() {
        let addr = start().await.unwrap();
        for path in ["/", "/index.html", "/bytes/not-a-number"] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            let (status, headers, body) = fetch(addr, &request).await;
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
            assert_eq!(header(&headers, "content-length"), body.len().to_string());
            let body = String::from_utf8(body).unwrap();
            assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
            assert!(body.contains("allium test network"), "{body}");
        }
    }

    #[tokio::test]
    async fn bytes_are_served_as_octet_stream() {
        let addr = start().await.unwrap();
        // More than one chunk, and a short last one.
        let n = CHUNK * 2 + 7;
        let request = format!("GET /bytes/{n} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let (status, headers, body) = fetch(addr, &request).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(header(&headers, "content-type"), "application/octet-stream");
        assert_eq!(header(&headers, "content-length"), n.to_string());
        assert_eq!(body.len(), n);
        assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));

        let (_, headers, body) = fetch(addr, "GET /bytes/0 HTTP/1.1\r\n\r\n").await;
        assert_eq!(header(&headers, "content-type"), "application/octet-stream");
        assert!(body.is_empty());
    }

    #[test]
    fn paths_map_to_resources() {
        assert_eq!(Resource::for_path("/"), Resource::Page);
        assert_eq!(Resource::for_path("/bytes/10"), Resource::Bytes(10));
        assert_eq!(
            Resource::for_path("/bytes/1073741824"),
            Resource::Bytes(MAX_BYTES)
        );
        assert_eq!(Resource::for_path("/bytes/1073741825"), Resource::Page);
        assert_eq!(Resource::for_path("/bytes/-1"), Resource::Page);
    }
}
