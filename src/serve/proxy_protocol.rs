//! The PROXY protocol (HAProxy's, versions 1 and 2): behind a layer-4 load
//! balancer, the client's address comes in a header the balancer writes
//! before the client's bytes.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::listener::Listener;
use crate::context::TrustedNetworks;

/// Default [PROXY header timeout](ProxyProtocolListener::header_timeout): 5 s.
pub const DEFAULT_PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The version 2 signature (12 bytes).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The version 1 signature.
const V1_SIGNATURE: &[u8; 6] = b"PROXY ";
/// The longest version 1 header, CRLF included (the specification's 107).
const V1_MAX: usize = 107;
/// The longest version 2 header accepted: the 16-byte head, the addresses
/// and 4 KiB of TLVs (load balancers send a few dozen bytes of them).
const V2_MAX: usize = 16 + 216 + 4096;

/// A [`Listener`] whose connections from trusted peers (the load balancer)
/// start with a PROXY protocol header, version 1 or 2: the client address it
/// carries becomes the connection's peer address, so every layer (rate-limit
/// keys, trust checks, logs) sees the client instead of the balancer.
///
/// - From a **trusted** peer the header is required, and read on the
///   connection's own task (never in [`accept`](Listener::accept), where one
///   slow peer would hold up every other) within the
///   [header timeout](Self::header_timeout); a missing, malformed or late
///   header closes the connection. `PROXY UNKNOWN`, a version 2 `LOCAL`
///   command (the balancer's health check) and address families other than
///   TCP over IPv4 or IPv6 keep the balancer's own address.
/// - From any **other** peer a PROXY header is refused: a connection whose
///   first bytes are a PROXY signature is closed before HTTP reads them, so
///   a client cannot choose its own address. Its other bytes are served as
///   usual.
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use tower_harden::context::TrustedNetworks;
/// use tower_harden::serve::ProxyProtocolListener;
///
/// # async fn run() -> std::io::Result<()> {
/// let app = Router::new().route("/", get(|| async { "hello" }));
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
/// let balancers = TrustedNetworks::cidrs(["10.0.0.0/8"]).expect("valid CIDRs");
/// tower_harden::serve(ProxyProtocolListener::new(listener, balancers), app).await
/// # }
/// ```
pub struct ProxyProtocolListener<L> {
    inner: L,
    trusted: TrustedNetworks,
    header_timeout: Duration,
}

impl<L> ProxyProtocolListener<L> {
    /// Reads a PROXY header on every connection from `trusted` peers.
    pub fn new(inner: L, trusted: TrustedNetworks) -> Self {
        Self {
            inner,
            trusted,
            header_timeout: DEFAULT_PROXY_HEADER_TIMEOUT,
        }
    }

    /// How long a trusted peer has to send the whole header once connected.
    /// Default: [`DEFAULT_PROXY_HEADER_TIMEOUT`] (5 s; a balancer sends it
    /// with its first packet).
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }
}

impl<L: fmt::Debug> fmt::Debug for ProxyProtocolListener<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyProtocolListener")
            .field("inner", &self.inner)
            .field("trusted", &self.trusted)
            .field("header_timeout", &self.header_timeout)
            .finish()
    }
}

impl<L: Listener> Listener for ProxyProtocolListener<L> {
    type Io = ProxiedIo<L::Io>;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        let (io, peer) = self.inner.accept().await;
        (ProxiedIo::new(io), peer)
    }

    fn prepare(
        &self,
        io: Self::Io,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<(Self::Io, SocketAddr)>> + Send + 'static {
        let inner = self.inner.prepare(io.inner, peer);
        let trusted = self.trusted.is_trusted(peer.ip());
        let timeout = self.header_timeout;
        async move {
            let (io, peer) = inner.await?;
            if !trusted {
                // Served as usual, but a PROXY signature in its first bytes
                // closes it.
                return Some((ProxiedIo::guarded(io), peer));
            }
            match tokio::time::timeout(timeout, read_header(io)).await {
                Ok(Ok((io, source))) => Some((io, source.unwrap_or(peer))),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "PROXY header refused; connection closed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "no PROXY header within the timeout; connection closed");
                    None
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Reads a header from a trusted peer; returns the connection (with the
/// bytes read past the header) and the client's address, if it gave one.
async fn read_header<I>(mut io: I) -> io::Result<(ProxiedIo<I>, Option<SocketAddr>)>
where
    I: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match parse(&buf) {
            Parsed::Header { length, source } => {
                buf.advance(length);
                let io = ProxiedIo {
                    inner: io,
                    prefix: buf.freeze(),
                    guard: None,
                };
                return Ok((io, source));
            }
            Parsed::Invalid(why) => return Err(io::Error::new(io::ErrorKind::InvalidData, why)),
            Parsed::Incomplete => {}
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the PROXY header",
            ));
        }
    }
}

/// What the bytes read so far make.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Incomplete,
    Invalid(&'static str),
    /// A whole header of `length` bytes; `source` is `None` when it carries
    /// no client address to use.
    Header {
        length: usize,
        source: Option<SocketAddr>,
    },
}

/// Parses a version 1 or 2 header at the start of `buf`.
fn parse(buf: &[u8]) -> Parsed {
    if starts_like(buf, V1_SIGNATURE) {
        if buf.len() < V1_SIGNATURE.len() {
            return Parsed::Incomplete;
        }
        parse_v1(buf)
    } else if starts_like(buf, V2_SIGNATURE) {
        if buf.len() < 16 {
            return Parsed::Incomplete;
        }
        parse_v2(buf)
    } else {
        Parsed::Invalid("no PROXY protocol signature")
    }
}

/// Whether `buf` and `signature` agree on their common length.
fn starts_like(buf: &[u8], signature: &[u8]) -> bool {
    let common = buf.len().min(signature.len());
    buf[..common] == signature[..common]
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") else {
        return match buf.len() >= V1_MAX {
            true => Parsed::Invalid("PROXY v1 header longer than 107 bytes"),
            false => Parsed::Incomplete,
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[V1_SIGNATURE.len()..end]) else {
        return Parsed::Invalid("PROXY v1 header is not ASCII");
    };
    let length = end + 2;
    let fields: Vec<&str> = line.split(' ').collect();
    let source = match fields.as_slice() {
        ["UNKNOWN", ..] => None,
        ["TCP4", source, destination, source_port, destination_port] => {
            let (Ok(source), Ok(_)) = (source.parse::<Ipv4Addr>(), destination.parse::<Ipv4Addr>())
            else {
                return Parsed::Invalid("PROXY v1 TCP4 address is not IPv4");
            };
            let (Some(port), Some(_)) = (port(source_port), port(destination_port)) else {
                return Parsed::Invalid("PROXY v1 port is not a port");
            };
            Some(SocketAddr::new(IpAddr::V4(source), port))
        }
        ["TCP6", source, destination, source_port, destination_port] => {
            let (Ok(source), Ok(_)) = (source.parse::<Ipv6Addr>(), destination.parse::<Ipv6Addr>())
            else {
                return Parsed::Invalid("PROXY v1 TCP6 address is not IPv6");
            };
            let (Some(port), Some(_)) = (port(source_port), port(destination_port)) else {
                return Parsed::Invalid("PROXY v1 port is not a port");
            };
            Some(SocketAddr::new(IpAddr::V6(source), port))
        }
        _ => return Parsed::Invalid("PROXY v1 header is malformed"),
    };
    Parsed::Header { length, source }
}

/// A decimal port without sign or leading zero.
fn port(text: &str) -> Option<u16> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    (digits && !leading_zero)
        .then(|| text.parse().ok())
        .flatten()
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Parsed::Invalid("PROXY v2 header of another version");
    }
    let local = match version_command & 0x0F {
        0 => true,
        1 => false,
        _ => return Parsed::Invalid("PROXY v2 command is neither LOCAL nor PROXY"),
    };
    let family = buf[13];
    let length = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if length > V2_MAX {
        return Parsed::Invalid("PROXY v2 header longer than allowed");
    }
    if buf.len() < length {
        return Parsed::Incomplete;
    }
    let addresses = &buf[16..length];
    let source = match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            if addresses.len() < 12 {
                return Parsed::Invalid("PROXY v2 IPv4 addresses truncated");
            }
            let ip = Ipv4Addr::new(addresses[0], addresses[1], addresses[2], addresses[3]);
            let port = u16::from_be_bytes([addresses[8], addresses[9]]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        0x21 => {
            if addresses.len() < 36 {
                return Parsed::Invalid("PROXY v2 IPv6 addresses truncated");
            }
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&addresses[..16]);
            let port = u16::from_be_bytes([addresses[32], addresses[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        // Unspecified, UDP, UNIX sockets: no client address to use.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => None,
        _ => return Parsed::Invalid("PROXY v2 address family unknown"),
    };
    Parsed::Header {
        length,
        source: if local { None } else { source },
    }
}

/// The I/O of a [`ProxyProtocolListener`]'s connection: the inner I/O, after
/// the PROXY header (bytes read past it are replayed first), or, from an
/// untrusted peer, watched for a PROXY signature in its first bytes.
pub struct ProxiedIo<I> {
    inner: I,
    prefix: Bytes,
    /// From an untrusted peer: its first bytes checked against the
    /// signatures; `None` once none can match.
    guard: Option<Guard>,
}

/// How far an untrusted peer's first bytes agree with each signature.
#[derive(Debug, Clone, Copy)]
struct Guard {
    checked: usize,
    v1: bool,
    v2: bool,
}

impl<I> ProxiedIo<I> {
    fn new(inner: I) -> Self {
        Self {
            inner,
            prefix: Bytes::new(),
            guard: None,
        }
    }

    fn guarded(inner: I) -> Self {
        Self {
            inner,
            prefix: Bytes::new(),
            guard: Some(Guard {
                checked: 0,
                v1: true,
                v2: true,
            }),
        }
    }

    /// The inner I/O.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I> fmt::Debug for ProxiedIo<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxiedIo")
            .field("replayed", &self.prefix.len())
            .finish_non_exhaustive()
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ProxiedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(guard) = this.guard.as_mut() {
            let read = &buf.filled()[before..];
            if read.is_empty() {
                this.guard = None;
                return Poll::Ready(Ok(()));
            }
            // Each signature still possible is compared with the new bytes at
            // their offset in the stream.
            let offset = guard.checked;
            for (possible, signature) in [
                (&mut guard.v1, &V1_SIGNATURE[..]),
                (&mut guard.v2, &V2_SIGNATURE[..]),
            ] {
                if !*possible {
                    continue;
                }
                let part = &signature[offset..];
                let common = part.len().min(read.len());
                *possible = read[..common] == part[..common];
                if *possible && common == part.len() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "a PROXY header from an untrusted peer",
                    )));
                }
            }
            guard.checked += read.len();
            if !guard.v1 && !guard.v2 {
                this.guard = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ProxiedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family);
        header.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        header.extend_from_slice(addresses);
        header
    }

    #[test]
    fn version_1_headers() {
        let header = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\nGET /";
        assert_eq!(
            parse(header),
            Parsed::Header {
                length: header.len() - 5,
                source: Some("192.0.2.7:51234".parse().unwrap())
            }
        );
        let header = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n";
        assert_eq!(
            parse(header),
            Parsed::Header {
                length: header.len(),
                source: Some("[2001:db8::7]:51234".parse().unwrap())
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                length: 15,
                source: None
            }
        );
        assert_eq!(parse(b"PRO"), Parsed::Incomplete);
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7"), Parsed::Incomplete);
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 65536\r\n"[..],
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 01 2\r\n",
            b"PROXY TCP4 192.0.2.7  10.0.0.1 1 2\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(matches!(parse(bad), Parsed::Invalid(_)), "{bad:?}");
        }
        let endless = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(parse(&endless), Parsed::Invalid(_)));
    }

    #[test]
    fn version_2_headers() {
        let mut inet = vec![192, 0, 2, 7, 10, 0, 0, 1];
        inet.extend_from_slice(&51234u16.to_be_bytes());
        inet.extend_from_slice(&443u16.to_be_bytes());
        let header = v2(1, 0x11, &inet);
        assert_eq!(
            parse(&header),
            Parsed::Header {
                length: 28,
                source: Some("192.0.2.7:51234".parse().unwrap())
            }
        );
        assert_eq!(parse(&header[..20]), Parsed::Incomplete);
        // LOCAL (a health check): the balancer's own address.
        assert_eq!(
            parse(&v2(0, 0x11, &inet)),
            Parsed::Header {
                length: 28,
                source: None
            }
        );
        // TLVs after the addresses are skipped.
        let mut with_tlv = inet.clone();
        with_tlv.extend_from_slice(&[0x04, 0, 2, b'h', b'i']);
        assert!(matches!(
            parse(&v2(1, 0x11, &with_tlv)),
            Parsed::Header { length: 33, .. }
        ));
        assert!(matches!(
            parse(&v2(1, 0x11, &inet[..6])),
            Parsed::Invalid(_)
        ));
        assert!(matches!(parse(&v2(2, 0x11, &inet)), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(1, 0x41, &inet)), Parsed::Invalid(_)));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(parse(&huge), Parsed::Invalid(_)));
    }

    proptest! {
        /// Any bytes make a verdict, never a panic; a header's length is
        /// never past the bytes read.
        #[test]
        fn any_bytes_parse_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            v2_prefix in any::<bool>(),
        ) {
            let mut input = if v2_prefix { V2_SIGNATURE.to_vec() } else { b"PROXY ".to_vec() };
            input.extend_from_slice(&bytes);
            for input in [&input[..], &bytes[..]] {
                if let Parsed::Header { length, .. } = parse(input) {
                    prop_assert!(length <= input.len());
                }
            }
        }
    }
}
