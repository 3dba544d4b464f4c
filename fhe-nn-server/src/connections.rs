//! The accept loop: HTTP/1.1 connections (over TLS when configured) with a deadline on the
//! TLS handshake and on every request's headers (which also closes kept-alive connections
//! left idle that long), and a graceful shutdown that stops accepting and lets in-flight
//! requests finish.

use std::future::Future;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::tls::Tls;

/// Serves `app` on `listener` until `shutdown` completes, then waits for the open
/// connections to finish their requests.
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors or a connection reset before it was
                        // accepted: wait a little rather than spin.
                        eprintln!("fhe-nn-server: accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let stopped = stopped.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    let Some(tls) = tls else {
                        return serve_connection(stream, app, header_timeout, stopped).await;
                    };
                    // A handshake that does not finish within the header timeout is dropped.
                    let handshake = tls.acceptor.accept(stream);
                    if let Ok(Ok(stream)) = tokio::time::timeout(header_timeout, handshake).await {
                        serve_connection(stream, app, header_timeout, stopped).await;
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection's requests until it closes, or until `stopped` changes (then its
/// in-flight request finishes first).
async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    header_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.as_mut().await;
        }
    }
}
