//! The accept loop every socket listener shares: accept until cancelled, admit each
//! connection (allow-list and caps, see [`crate::admission`]) before a byte is read, run it
//! as its own task, reap finished tasks as it goes, back off on accept errors (out of
//! descriptors) instead of spinning, and on shutdown stop accepting and wait for the open
//! connections, which watch the same token to finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Ticket};

/// How one listener accepts.
pub struct Accept {
    /// The listener's name in logs.
    pub name: &'static str,
    pub admission: Arc<Admission>,
    /// When set, at most this many connections run at once and the rest wait in the listen
    /// backlog (FreeSWITCH's `socket` app waits with them) instead of being closed.
    pub slots: Option<Arc<Semaphore>>,
}

/// Runs `handle(stream, peer, ticket)` for every admitted connection until `shutdown`, then
/// waits for the running ones.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    how: Accept,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, Ticket) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        let permit = match &how.slots {
            Some(slots) => tokio::select! {
                p = slots.clone().acquire_owned() => Some(p.expect("never closed")),
                _ = shutdown.cancelled() => break,
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(listener = how.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        while conns.try_join_next().is_some() {}
        // Refused: closed now (counted and logged by the admission).
        let Ok(ticket) = how.admission.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        let conn = handle(stream, peer, ticket);
        conns.spawn(async move {
            let _permit = permit;
            conn.await;
        });
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}
