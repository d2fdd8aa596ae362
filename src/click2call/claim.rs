//! The database's half of double-click protection: an attempt this process starts is claimed
//! in storage first, so a repeated click that reached another replica (or this one after a
//! restart) joins it; the attempt's outcome is written back for those who joined.
//!
//! On SQLite (one process by construction) a click without an `Idempotency-Key` is decided by
//! this process's memory alone, which spares every click a second write; a key is claimed
//! in the database on either engine, so it outlives a restart.
//!
//! An error travels through the claims table as a short code ([`code`] / [`from_code`]), so a
//! click joined on another replica gets the same answer, status and reason as the first.

use std::time::Duration;

use tokio::sync::watch;

use super::dedupe::Outcome;
use super::{Click2CallError, Placed, Request};
use crate::domain::values::CallId;
use crate::storage::{Backend, ClaimOutcome, ClaimRequest, Storage};

/// How often a click joined to another replica's attempt reads its outcome.
const POLL: Duration = Duration::from_millis(20);

/// Whether `req` is claimed in the database: always on PostgreSQL (replicas share it), on
/// SQLite when it carries an `Idempotency-Key`.
pub(super) fn shared(storage: &Storage, req: &Request) -> bool {
    storage.backend() == Backend::Postgres || req.idempotency_key.is_some()
}

/// The claim request of `req` with the engine's windows.
pub(super) fn request(req: &Request, pair: Duration, key: Duration) -> ClaimRequest {
    ClaimRequest {
        ramal: req.ramal.as_str().to_string(),
        telefone: req.telefone.as_str().to_string(),
        idempotency_key: req.idempotency_key.as_ref().map(|k| k.as_str().to_string()),
        pair_window_ms: pair.as_millis() as i64,
        key_window_ms: key.as_millis() as i64,
    }
}

/// What Finaz's error becomes in the claims table.
pub(super) fn code(e: &Click2CallError) -> String {
    match e {
        Click2CallError::NotRegistered { cause } => format!("not_registered:{cause}"),
        Click2CallError::Busy => "busy".into(),
        Click2CallError::Failed { cause } => format!("failed:{cause}"),
        Click2CallError::NotConnected => "not_connected".into(),
        Click2CallError::ConnectionLost => "connection_lost".into(),
        Click2CallError::Timeout(d) => format!("timeout:{}", d.as_millis()),
        Click2CallError::KeyReused => "key_reused".into(),
        Click2CallError::Storage(m) => format!("storage:{m}"),
        Click2CallError::Internal(m) => format!("internal:{m}"),
    }
}

/// The error a code stands for (an unknown code, from a newer build: internal).
pub(super) fn from_code(code: &str) -> Click2CallError {
    let (kind, detail) = code.split_once(':').unwrap_or((code, ""));
    let detail = detail.to_string();
    match kind {
        "not_registered" => Click2CallError::NotRegistered { cause: detail },
        "busy" => Click2CallError::Busy,
        "failed" => Click2CallError::Failed { cause: detail },
        "not_connected" => Click2CallError::NotConnected,
        "connection_lost" => Click2CallError::ConnectionLost,
        "timeout" => Click2CallError::Timeout(Duration::from_millis(detail.parse().unwrap_or(0))),
        "key_reused" => Click2CallError::KeyReused,
        "storage" => Click2CallError::Storage(detail),
        _ => Click2CallError::Internal(format!("another replica's attempt failed: {code}")),
    }
}

/// Writes the attempt's outcome to its claim once it is decided.
pub(super) async fn settle(storage: Storage, owner: i64, mut rx: watch::Receiver<Outcome>) {
    let outcome = match rx.wait_for(Option::is_some).await {
        Ok(o) => o.clone().expect("waited for Some"),
        Err(_) => Err(Click2CallError::Internal("no outcome".into())),
    };
    let settled = match &outcome {
        Ok(p) => ClaimOutcome::Placed {
            call_id: p.call_id.as_str().to_string(),
            answered: p.answered,
        },
        Err(e) => ClaimOutcome::Failed(code(e)),
    };
    if let Err(e) = storage.settle_click2call(owner, settled).await {
        tracing::warn!(error = %e, "click2call claim not settled: a click joined on another replica will time out");
    }
}

/// Follows another replica's attempt `owner` until it is decided, or `patience` passes.
pub(super) async fn follow(storage: &Storage, owner: i64, patience: Duration) -> Outcome {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match storage.click2call_outcome(owner).await {
            Ok(Some(ClaimOutcome::Placed { call_id, answered })) => {
                return Some(match CallId::parse(&call_id) {
                    Ok(call_id) => Ok(Placed { call_id, answered }),
                    Err(_) => Err(Click2CallError::Internal("a claim holds no call id".into())),
                });
            }
            Ok(Some(ClaimOutcome::Failed(c))) => return Some(Err(from_code(&c))),
            Ok(Some(ClaimOutcome::Running)) => {}
            Ok(None) => {
                return Some(Err(Click2CallError::Internal(
                    "the attempt this click joined expired undecided (its replica stopped?)".into(),
                )));
            }
            Err(e) => return Some(Err(Click2CallError::Storage(e.to_string()))),
        }
        if tokio::time::Instant::now() >= deadline {
            return Some(Err(Click2CallError::Timeout(patience)));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_survives_its_code() {
        for e in [
            Click2CallError::NotRegistered {
                cause: "USER_NOT_REGISTERED".into(),
            },
            Click2CallError::Busy,
            Click2CallError::Failed {
                cause: "NO_ANSWER".into(),
            },
            Click2CallError::NotConnected,
            Click2CallError::ConnectionLost,
            Click2CallError::Timeout(Duration::from_millis(2500)),
            Click2CallError::KeyReused,
            Click2CallError::Storage("disk: full".into()),
        ] {
            assert_eq!(from_code(&code(&e)), e);
        }
        assert!(matches!(
            from_code("new_kind"),
            Click2CallError::Internal(_)
        ));
    }
}
