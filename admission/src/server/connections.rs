//! Connections: how many are served at once, how long a TLS handshake, a request head or an
//! idle keep-alive may take, and the plain-HTTP probe listener.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio::time::Instant as Deadline;

/// HTTP/2 flow-control window of a stream and of a connection: the spec's default.
const H2_WINDOW: u32 = 65_535;

/// How long a connection may take at each stage (`limits`).
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnectionLimits {
    pub(super) handshake: Duration,
    pub(super) idle: Duration,
}

pub(super) async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    connections: Arc<Semaphore>,
    limits: ConnectionLimits,
) {
    loop {
        // At the cap nothing is accepted: further connections wait in the kernel's accept
        // queue, costing this process nothing, until a served one ends.
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = accept(&listener).await;
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, acceptor, router, limits).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    limits: ConnectionLimits,
) {
    let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // The protocol is the one ALPN chose (HTTP/1.1 without ALPN): no unbounded wait to sniff it.
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let service = hyper_util::service::TowerToHyperService::new(router);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let ended = if h2 {
        let mut builder = builder.http2_only();
        // Pings find dead peers; a live one answers them, so no byte for `idle` means the
        // client never spoke HTTP/2 (a stalled preface) or stopped answering.
        // Flow-control windows at the protocol's default (hyper's are 1 MiB): what a peer may
        // send before the body is read is held outside `maxBytesInFlight`, per connection.
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(limits.idle / 2)
            .keep_alive_timeout(limits.idle / 2)
            .initial_stream_window_size(H2_WINDOW)
            .initial_connection_window_size(H2_WINDOW);
        let watched = Watched::new(tls);
        let last_read = watched.last_read.clone();
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(watched), service);
        tokio::select! {
            ended = connection => ended,
            () = last_read.expired(limits.idle) => {
                tracing::debug!(%peer, "HTTP/2 connection idle; closed");
                Ok(())
            }
        }
    } else {
        let mut builder = builder.http1_only();
        // Counts from the handshake and from each answer: covers both a slow request head and
        // an idle keep-alive connection.
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.idle);
        builder
            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
            .await
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// When a connection last read a byte.
struct LastRead {
    origin: Instant,
    /// Milliseconds since `origin`.
    millis: AtomicU64,
}

impl LastRead {
    fn touch(&self) {
        let millis = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(millis, Ordering::Relaxed);
    }

    /// Returns once no byte has been read for `idle`.
    async fn expired(&self, idle: Duration) {
        loop {
            let last = self.origin + Duration::from_millis(self.millis.load(Ordering::Relaxed));
            let until = last + idle;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(Deadline::from_std(until)).await;
        }
    }
}

/// A stream that records when it last read a byte.
struct Watched<T> {
    inner: T,
    last_read: Arc<LastRead>,
}

impl<T> Watched<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            last_read: Arc::new(LastRead {
                origin: Instant::now(),
                millis: AtomicU64::new(0),
            }),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last_read.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The next connection; accept errors (out of file descriptors and the like) are logged and
/// retried after a pause instead of spinning.
async fn accept(listener: &tokio::net::TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves plain HTTP (the probe listener) until the process stops.
pub(super) async fn plain_loop(listener: tokio::net::TcpListener, router: Router) {
    loop {
        let (stream, peer) = accept(&listener).await;
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(router);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
