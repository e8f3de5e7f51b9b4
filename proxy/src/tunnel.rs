//! Byte tunnels for upgraded connections (WebSocket and any other `Upgrade`).
//!
//! After both sides have switched protocols the proxy copies bytes both ways and records
//! activity on the route. Idle WebSockets are the realistic connection count (every open
//! notebook tab holds some), so when both sides are plain TCP the tunnel waits for readiness
//! and only borrows a buffer while bytes are actually moving: an idle tunnel holds two sockets
//! and a small task, no copy buffers. Other transports (TLS on the client side) use tokio's
//! copy with small buffers.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::gate::Lease;
use crate::routes::Route;
use crate::server::Admitted;

/// Buffer size for one read while bytes move. Allocated per burst, not per tunnel.
const BURST: usize = 16 * 1024;
/// How long a tunnel stays up after one side has closed, waiting for the other to close too.
const HALF_CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(30);
/// Buffer size per direction for the generic (TLS) copy.
const GENERIC_BUFFER: usize = 4 * 1024;

/// Copies bytes between the client and the upstream until either side closes, the route's
/// tunnels opened at `epoch` are closed (see [`Route::tunnels_closed`]) or the `lease` of the
/// credential that opened the tunnel ends, touching the route's activity whenever data moves.
pub(crate) async fn run(
    client: Upgraded,
    upstream: Upgraded,
    route: Arc<Route>,
    epoch: u64,
    lease: Option<Arc<Lease>>,
) -> io::Result<()> {
    // A plain client socket keeps its slot under the listener's connection cap for as long
    // as the tunnel holds the socket (`_slot`); a TLS one carries it inside.
    let (client, _slot) = match client.downcast::<TokioIo<Admitted>>() {
        Ok(parts) => {
            let (stream, slot) = parts.io.into_inner().into_parts();
            ((Side::Tcp(stream), parts.read_buf), Some(slot))
        }
        Err(other) => (
            (Side::Other(Box::new(TokioIo::new(other))), Bytes::new()),
            None,
        ),
    };
    let upstream = match upstream.downcast::<MaybeHttpsStream<TokioIo<TcpStream>>>() {
        Ok(parts) => match parts.io {
            MaybeHttpsStream::Http(io) => (Side::Tcp(io.into_inner()), parts.read_buf),
            tls => (Side::Other(Box::new(TokioIo::new(tls))), parts.read_buf),
        },
        Err(other) => (Side::Other(Box::new(TokioIo::new(other))), Bytes::new()),
    };
    let (client, client_pending) = client;
    let (upstream, upstream_pending) = upstream;
    let closed = async {
        match &lease {
            Some(lease) => tokio::select! {
                () = route.tunnels_closed(epoch) => {}
                () = lease.ended() => {}
            },
            None => route.tunnels_closed(epoch).await,
        }
    };
    route.touch();
    match (client, upstream) {
        (Side::Tcp(mut client), Side::Tcp(mut upstream)) => {
            // Bytes that arrived with the handshake go first.
            send_pending(&mut upstream, client_pending).await?;
            send_pending(&mut client, upstream_pending).await?;
            tokio::select! {
                result = tcp_tunnel(&mut client, &mut upstream, &route) => result,
                () = closed => Ok(()),
            }
        }
        (client, upstream) => {
            let mut client = client.boxed();
            let mut upstream = upstream.boxed();
            send_pending(&mut upstream, client_pending).await?;
            send_pending(&mut client, upstream_pending).await?;
            let copy = tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut upstream,
                GENERIC_BUFFER,
                GENERIC_BUFFER,
            );
            tokio::select! {
                result = copy => result.map(|_| ()),
                () = closed => Ok(()),
            }
        }
    }
}

/// Writes the bytes that arrived with the handshake and drops them. They must not live on in
/// the tunnel: even an empty `Bytes` from hyper can keep its whole read buffer allocated, which
/// would cost every idle WebSocket kilobytes.
async fn send_pending<W: AsyncWrite + Unpin + ?Sized>(
    to: &mut W,
    pending: Bytes,
) -> io::Result<()> {
    if !pending.is_empty() {
        to.write_all(&pending).await?;
    }
    Ok(())
}

/// Any byte stream a tunnel can join.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One side of a tunnel: plain TCP (the buffer-free fast path) or anything else.
enum Side {
    Tcp(TcpStream),
    Other(Box<dyn Io>),
}

impl Side {
    fn boxed(self) -> Box<dyn Io> {
        match self {
            Self::Tcp(stream) => Box::new(stream),
            Self::Other(io) => io,
        }
    }
}

/// The zero-idle-buffer loop over two TCP streams.
async fn tcp_tunnel(a: &mut TcpStream, b: &mut TcpStream, route: &Route) -> io::Result<()> {
    // Phase one: both directions open. A half-close is passed on with shutdown().
    let (mut a_open, mut b_open) = (true, true);
    while a_open && b_open {
        tokio::select! {
            ready = a.ready(Interest::READABLE) => {
                if ready?.is_readable() {
                    a_open = pump(a, b, route).await?;
                }
            }
            ready = b.ready(Interest::READABLE) => {
                if ready?.is_readable() {
                    b_open = pump(b, a, route).await?;
                }
            }
        }
    }
    // Phase two: one side has finished; the other gets a bounded time to finish too, so a
    // peer that ignores the close cannot hold sockets forever.
    let (from, to) = if a_open { (a, b) } else { (b, a) };
    let drain = async {
        while from.readable().await.is_ok() {
            if !pump(from, to, route).await? {
                break;
            }
        }
        Ok(())
    };
    tokio::time::timeout(HALF_CLOSE_LINGER, drain)
        .await
        .unwrap_or(Ok(()))
}

/// Moves what `from` has buffered to `to`. Returns false once `from` has closed its side.
async fn pump(from: &mut TcpStream, to: &mut TcpStream, route: &Route) -> io::Result<bool> {
    let mut buffer = vec![0u8; BURST];
    loop {
        match from.try_read(&mut buffer) {
            Ok(0) => {
                // The peer finished sending: pass the half-close on.
                let _ = to.shutdown().await;
                return Ok(false);
            }
            Ok(n) => {
                route.touch();
                to.write_all(&buffer[..n]).await?;
                if n < buffer.len() {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}
