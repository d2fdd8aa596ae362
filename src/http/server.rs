//! Serves a listener's routes over plain TCP or TLS (rustls): connections admitted at accept
//! (allow-list and caps, before a byte is read), one task per connection, the peer address
//! attached to every request, the TLS handshake and the request head bounded in time (and
//! the whole request, where asked), and a graceful stop that lets requests in flight finish.
//!
//! warp 0.4 cannot terminate TLS nor be given another acceptor, so its filter runs as a
//! service under hyper here.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::accept::{self, Accept};
use crate::admission::Admission;

/// The TCP peer of a request (the allow-list reads it).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Reads a PEM certificate chain and private key into a TLS acceptor (HTTP/1.1 only).
pub fn load_tls(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading http.tls_cert {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing http.tls_cert {}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "http.tls_cert {} holds no certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading http.tls_key {}", key.display()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("http.tls_cert and http.tls_key do not make a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What bounds a listener's connections.
#[derive(Clone)]
pub struct Limits {
    /// Time to receive a request head (and a TLS handshake).
    pub head_timeout: Duration,
    /// Time for a whole request, body and handler included (`None`: unbounded, for
    /// listeners that stream downloads and bound their bodies themselves).
    pub request_deadline: Option<Duration>,
    pub admission: Arc<Admission>,
}

/// Accepts until `shutdown`, then waits for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    routes: BoxedFilter<(Response,)>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let service = warp::service(routes);
    let head_timeout = limits.head_timeout;
    let deadline = limits.request_deadline;
    let how = Accept {
        name: "http",
        admission: limits.admission,
        slots: None,
    };
    let stop = shutdown.clone();
    accept::serve(listener, how, shutdown, |tcp, peer, ticket| {
        let (service, tls, stop) = (service.clone(), tls.clone(), stop.clone());
        async move {
            let _ticket = ticket;
            let _ = tcp.set_nodelay(true);
            let limits = (head_timeout, deadline);
            match tls {
                None => connection(TokioIo::new(tcp), peer, service, limits, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(head_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            connection(TokioIo::new(stream), peer, service, limits, stop).await
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        }
    })
    .await;
}

async fn connection<I, S>(
    io: TokioIo<I>,
    peer: SocketAddr,
    service: S,
    (head_timeout, deadline): (Duration, Option<Duration>),
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<
            hyper::Request<Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let handler = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        let mut s = service.clone();
        let call = tower_service::Service::call(&mut s, req);
        async move {
            let Some(d) = deadline else {
                return call.await;
            };
            match tokio::time::timeout(d, call).await {
                Ok(r) => r,
                Err(_) => {
                    let mut r = Response::new("request timed out\n".into());
                    *r.status_mut() = warp::http::StatusCode::REQUEST_TIMEOUT;
                    Ok(r)
                }
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .serve_connection(io, handler);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Binds `http.listen` and, when configured, loads the TLS pair (errors say which key).
pub fn tls_from(cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<Option<TlsAcceptor>> {
    match (cert, key) {
        (Some(c), Some(k)) => load_tls(c, k).map(Some),
        (None, None) => Ok(None),
        _ => anyhow::bail!("http.tls_cert and http.tls_key go together"),
    }
}
