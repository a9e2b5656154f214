//! Helpers shared by the integration tests: real servers on 127.0.0.1:0 and
//! raw HTTP/1.1 over TCP for what a normal client refuses to send.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves `app` with axum on a free loopback port; returns its address.
pub async fn spawn_axum(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// One parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Reads responses from a connection, keeping bytes that arrived past one
/// response for the next (pipelined responses often share a read).
pub struct ResponseReader<R> {
    stream: R,
    buffer: Vec<u8>,
}

impl<R: AsyncRead + Unpin> ResponseReader<R> {
    pub fn new(stream: R) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Reads one response (Content-Length or chunked framing). `Ok(None)` if
    /// the peer closed before a full response arrived.
    pub async fn next(&mut self) -> std::io::Result<Option<RawResponse>> {
        let head_end = loop {
            if let Some(pos) = find(&self.buffer, b"\r\n\r\n") {
                break pos;
            }
            if !self.fill().await? {
                return Ok(None);
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_string();
        self.buffer.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap_or_default()
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if (100..200).contains(&status) || status == 204 || status == 304 {
            Vec::new()
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buffer.len() < len {
                if !self.fill().await? {
                    return Ok(None);
                }
            }
            self.buffer.drain(..len).collect()
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(pos) = find(&self.buffer, b"\r\n") {
                        break pos;
                    }
                    if !self.fill().await? {
                        return Ok(None);
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buffer[..line_end]).to_string();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
                while self.buffer.len() < line_end + 2 + size + 2 {
                    if !self.fill().await? {
                        return Ok(None);
                    }
                }
                body.extend_from_slice(&self.buffer[line_end + 2..line_end + 2 + size]);
                self.buffer.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
            body
        } else {
            // Close-delimited.
            while self.fill().await? {}
            std::mem::take(&mut self.buffer)
        };
        Ok(Some(RawResponse {
            status,
            headers,
            body,
        }))
    }
}

/// Reads one response from `stream` (see [`ResponseReader`] for several).
pub async fn read_response<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> std::io::Result<Option<RawResponse>> {
    ResponseReader::new(stream).next().await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Connects, writes `request` raw, and reads one response (10 s cap).
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .expect("no response within 10 s")
        .unwrap()
        .expect("connection closed before a response")
}

/// A well-formed GET, for checking the server still answers.
pub async fn get(addr: SocketAddr, path: &str) -> RawResponse {
    raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

pub mod logs;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub mod redis_cluster;
pub mod routes;
