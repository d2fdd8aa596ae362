//! The webhook outbox: answered dialer calls recorded with their webhook in one commit, then
//! leased, delivered or retried, and kept as dead when they run out of time.
//!
//! Every state change is an operation on the executor, so a report from the socket and one
//! from the events of the same call are serialised: whichever commits first enqueues the
//! webhook, the other finds the call by one of its legs and only links what it knows.

use std::fmt;

use futures_util::FutureExt;
use sqlx::AnyConnection;
use sqlx::Row;

use super::executor::Op;
use super::{Backend, Storage, StorageError, calls, now_ms};

/// Where an outbox entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Delivered,
    Dead,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(OutboxState::Pending),
            "delivered" => Some(OutboxState::Delivered),
            "dead" => Some(OutboxState::Dead),
            _ => None,
        }
    }
}

/// A webhook waiting in, or done with, the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub call_id: String,
    pub url: String,
    pub state: OutboxState,
    pub attempts: i64,
    /// Unix milliseconds.
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
    /// When retrying stops (None on rows from before migration 2).
    pub give_up_at: Option<i64>,
    /// The lease it was last handed out under (see [`Storage::lease_due`]).
    pub lease: Option<i64>,
}

/// The columns [`entry`] reads, in order (a macro, so queries stay static strings).
macro_rules! entry_columns {
    () => {
        "id, call_id, url, state, attempts, created_at, next_attempt_at, last_error, delivered_at, give_up_at, lease"
    };
}

pub(super) use entry_columns;

pub(super) fn entry(r: &sqlx::any::AnyRow) -> OutboxEntry {
    OutboxEntry {
        id: r.get(0),
        call_id: r.get(1),
        url: r.get(2),
        state: OutboxState::parse(r.get::<&str, _>(3)).unwrap_or(OutboxState::Pending),
        attempts: r.get(4),
        created_at: r.get(5),
        next_attempt_at: r.get(6),
        last_error: r.get(7),
        delivered_at: r.get(8),
        give_up_at: r.get(9),
        lease: r.get(10),
    }
}

/// An operator answered a tagged dialer call: what to record and whom to tell.
pub struct DialerReport {
    /// The call id Finaz gets (`cid`), unless this conversation was reported already.
    pub call_id: String,
    /// The customer's leg: with `call_id`, what names one conversation. Other legs (the
    /// operator's) may outlive it and serve the next customer.
    pub customer_leg: String,
    pub crm_id: String,
    pub telefone: Option<String>,
    pub ramal: Option<String>,
    /// Every channel uuid known to belong to this call (both legs, the call id too).
    pub legs: Vec<String>,
    /// When retrying the webhook stops.
    pub give_up_at: i64,
    /// The webhook, built by the caller for `call_id` (which, when this conversation already
    /// has a call, is linked to it: Finaz finds the same call by either id).
    pub url: String,
    /// The call's FreeSWITCH node (`None`: the first).
    pub node: Option<String>,
}

impl fmt::Debug for DialerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialerReport")
            .field("call_id", &self.call_id)
            .field("legs", &self.legs)
            .finish_non_exhaustive()
    }
}

/// What recording a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// A new webhook is in the outbox.
    Enqueued { call_id: String, outbox_id: i64 },
    /// The call was already reported (by the other detection path, or twice).
    Duplicate { call_id: String },
}

/// Which dead entries a manual retry revives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryTarget {
    One(i64),
    AllDead,
}

impl Storage {
    /// Records an answered dialer call and its webhook in one commit; a call one of whose
    /// legs was already reported is a duplicate.
    pub async fn report_dialer_call(&self, report: DialerReport) -> Result<Reported, StorageError> {
        self.exec
            .run(Op::several("report_dialer_call"), move |c| {
                report_dialer(c, report).boxed()
            })
            .await
    }

    /// Takes up to `limit` due entries and pushes their next attempt to `until`, so they are
    /// neither taken twice nor lost if the process dies while sending them.
    pub async fn lease_due(
        &self,
        now: i64,
        limit: i64,
        until: i64,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        let backend = self.backend;
        self.exec
            .run(Op::one("lease_due"), move |c| {
                lease(c, backend, now, limit, until).boxed()
            })
            .await
    }

    /// When the next pending entry is due (index-backed).
    pub async fn next_due(&self) -> Result<Option<i64>, StorageError> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(at)
    }

    /// The entry was delivered: final, and a fact whichever lease learnt it (only a pending
    /// entry changes).
    pub async fn mark_delivered(&self, id: i64) -> Result<(), StorageError> {
        let at = now_ms();
        self.exec
            .run(Op::one("mark_delivered"), move |c| {
                async move {
                    sqlx::query(
                        "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = $2,
                            last_error = NULL, leased_until = NULL WHERE id = $1 AND state = 'pending'",
                    )
                    .bind(id)
                    .bind(at)
                    .execute(c)
                    .await
                    .map(drop)
                }
                .boxed()
            })
            .await
    }

    /// Records a failed attempt made under `lease`: retried at `next_attempt_at`, or dead
    /// when `dead`. Not applied when the entry was leased again meanwhile, or delivered.
    pub async fn mark_failed(
        &self,
        id: i64,
        lease: i64,
        error: &str,
        next_attempt_at: i64,
        dead: bool,
    ) -> Result<(), StorageError> {
        let error = error.to_string();
        self.exec
            .run(Op::one("mark_failed"), move |c| {
                async move {
                    sqlx::query(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3, leased_until = NULL,
                            state = CASE WHEN $4 THEN 'dead' ELSE 'pending' END
                         WHERE id = $1 AND state = 'pending' AND lease = $5",
                    )
                    .bind(id)
                    .bind(error)
                    .bind(next_attempt_at)
                    .bind(dead)
                    .bind(lease)
                    .execute(c)
                    .await
                    .map(drop)
                }
                .boxed()
            })
            .await
    }

    /// Makes every pending entry due now (at startup: Finaz may have come back meanwhile),
    /// but those out with a replica under a live lease.
    pub async fn retry_pending_now(&self) -> Result<u64, StorageError> {
        let done = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1 WHERE state = 'pending' AND next_attempt_at > $1
               AND (leased_until IS NULL OR leased_until <= $1)",
        )
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Puts dead entries back in the queue, due now, with `retry_for` ms more to live.
    pub async fn retry_dead(
        &self,
        target: RetryTarget,
        retry_for: i64,
    ) -> Result<u64, StorageError> {
        let now = now_ms();
        let query = match target {
            RetryTarget::One(id) => sqlx::query(
                "UPDATE outbox SET state = 'pending', next_attempt_at = $1, give_up_at = $2
                 WHERE state = 'dead' AND id = $3",
            )
            .bind(now)
            .bind(now + retry_for)
            .bind(id),
            RetryTarget::AllDead => sqlx::query(
                "UPDATE outbox SET state = 'pending', next_attempt_at = $1, give_up_at = $2
                 WHERE state = 'dead'",
            )
            .bind(now)
            .bind(now + retry_for),
        };
        let done = query.execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}

/// Records a dialer call and its webhook, unless this conversation (its call id or its
/// customer's leg) already has one. Its other legs are linked to it even when they belonged
/// to an earlier call: an operator's leg that outlives a customer serves the next one.
async fn report_dialer(c: &mut AnyConnection, r: DialerReport) -> Result<Reported, sqlx::Error> {
    let mut legs: Vec<&str> = r.legs.iter().map(String::as_str).collect();
    for must in [r.call_id.as_str(), r.customer_leg.as_str()] {
        if !legs.contains(&must) {
            legs.push(must);
        }
    }
    let now = now_ms();
    let call_id = match calls::of_any(&mut *c, &r.call_id, &r.customer_leg).await? {
        Some(id) => id,
        None => {
            calls::insert_answered_dialer(
                &mut *c,
                &r.call_id,
                r.ramal.as_deref(),
                r.telefone.as_deref(),
                &r.crm_id,
                r.node.as_deref(),
                now,
            )
            .await?;
            r.call_id.clone()
        }
    };
    for leg in legs.iter().filter(|l| **l != call_id) {
        calls::link_to(&mut *c, leg, &call_id, now).await?;
    }
    let inserted = sqlx::query(
        "INSERT INTO outbox (call_id, url, state, attempts, created_at, next_attempt_at, give_up_at)
         VALUES ($1, $2, 'pending', 0, $3, $3, $4) ON CONFLICT (call_id) DO NOTHING",
    )
    .bind(&call_id)
    .bind(&r.url)
    .bind(now)
    .bind(r.give_up_at)
    .execute(&mut *c)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(Reported::Duplicate { call_id });
    }
    let outbox_id: i64 = sqlx::query_scalar("SELECT id FROM outbox WHERE call_id = $1")
        .bind(&call_id)
        .fetch_one(&mut *c)
        .await?;
    Ok(Reported::Enqueued { call_id, outbox_id })
}

/// Hands out up to `limit` due entries, oldest due first, under one new lease, due again at
/// `until`, in one statement (on PostgreSQL `SKIP LOCKED`: a replica leasing at once takes
/// others instead of waiting). Returned as updated, in id order.
const LEASE_SQLITE: &str = concat!(
    "UPDATE outbox SET next_attempt_at = $3, lease = $4, leased_until = $3
      WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1
                    ORDER BY next_attempt_at, id LIMIT $2)
      RETURNING ",
    entry_columns!()
);

/// A locking CTE runs once: the `IN (... LIMIT ... FOR UPDATE SKIP LOCKED)` form, given a
/// second condition beside it, leased 2 entries for a limit of 1 in this crate's storage test
/// (the plan re-ran the subquery). `FOR UPDATE` re-checks a row another replica leased
/// meanwhile, which is then no longer due.
const LEASE_POSTGRES: &str = concat!(
    "WITH due AS (SELECT id AS due_id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1
                   ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
     UPDATE outbox SET next_attempt_at = $3, lease = $4, leased_until = $3 FROM due WHERE outbox.id = due.due_id
     RETURNING ",
    entry_columns!()
);

async fn lease(
    c: &mut AnyConnection,
    backend: Backend,
    now: i64,
    limit: i64,
    until: i64,
) -> Result<Vec<OutboxEntry>, sqlx::Error> {
    let lease = fastrand::i64(1..i64::MAX);
    let rows = sqlx::query(backend.pick(LEASE_SQLITE, LEASE_POSTGRES))
        .bind(now)
        .bind(limit)
        .bind(until)
        .bind(lease)
        .fetch_all(&mut *c)
        .await?;
    let mut entries: Vec<OutboxEntry> = rows.iter().map(entry).collect();
    entries.sort_by_key(|e| e.id);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::CallKind;

    fn report(call_id: &str, legs: &[&str]) -> DialerReport {
        DialerReport {
            call_id: call_id.into(),
            customer_leg: call_id.into(),
            crm_id: "CRM-1".into(),
            telefone: Some("41988445566".into()),
            ramal: Some("1001".into()),
            legs: legs.iter().map(|s| s.to_string()).collect(),
            give_up_at: now_ms() + 86_400_000,
            url: format!("http://finaz/x?cid={call_id}"),
            node: None,
        }
    }

    #[tokio::test]
    async fn one_webhook_per_call_whichever_leg_reports_it() {
        for (_d, s, _) in crate::storage::test_backends().await {
            let first = s
                .report_dialer_call(report("a", &["a", "b"]))
                .await
                .unwrap();
            let Reported::Enqueued { call_id, outbox_id } = first else {
                panic!("{first:?}")
            };
            assert_eq!(call_id, "a");
            // The other path saw the same call from the operator's leg, with another id.
            let again = s
                .report_dialer_call(report("b", &["b", "c"]))
                .await
                .unwrap();
            assert_eq!(
                again,
                Reported::Duplicate {
                    call_id: "a".into()
                }
            );
            // Every leg finds the call.
            for leg in ["a", "b", "c"] {
                let c = s.find_call(leg).await.unwrap().unwrap();
                assert_eq!((c.id.as_str(), c.kind), ("a", CallKind::Dialer));
                assert_eq!(c.crm_id.as_deref(), Some("CRM-1"));
            }
            let e = s.outbox_for_call("a").await.unwrap().unwrap();
            assert_eq!((e.id, e.url.as_str()), (outbox_id, "http://finaz/x?cid=a"));
            assert_eq!(s.count_outbox(OutboxState::Pending).await.unwrap(), 1);
        }
    }

    #[tokio::test]
    async fn leases_retries_delivery_and_dead_letters() {
        for (_d, s, _) in crate::storage::test_backends().await {
            s.report_dialer_call(report("a", &["a"])).await.unwrap();
            s.report_dialer_call(report("z", &["z"])).await.unwrap();
            let now = now_ms();
            let leased = s.lease_due(now, 1, now + 15_000).await.unwrap();
            assert_eq!(leased.len(), 1);
            // Leased: not due again until the lease ends.
            let other = s.lease_due(now, 10, now + 15_000).await.unwrap();
            assert_eq!(other.len(), 1);
            assert_ne!(other[0].id, leased[0].id);
            assert!(s.lease_due(now, 10, now + 15_000).await.unwrap().is_empty());
            assert_eq!(s.next_due().await.unwrap(), Some(now + 15_000));
            let again = s.lease_due(now + 15_000, 10, now + 30_000).await.unwrap();
            assert_eq!(again.len(), 2);
            let lease_of = |id: i64| again.iter().find(|e| e.id == id).unwrap().lease.unwrap();

            let (a, z) = (leased[0].id, other[0].id);
            s.mark_failed(a, lease_of(a), "HTTP 503", now + 500, false)
                .await
                .unwrap();
            s.mark_failed(z, lease_of(z), "HTTP 500", now, true)
                .await
                .unwrap();
            let dead = s.list_outbox(OutboxState::Dead, 10).await.unwrap();
            assert_eq!(dead.len(), 1);
            assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 500"));
            assert_eq!(dead[0].attempts, 1);
            let due = s.lease_due(now + 500, 10, now + 20_000).await.unwrap();
            assert_eq!(due.len(), 1);
            assert_eq!(due[0].attempts, 1);
            s.mark_delivered(a).await.unwrap();
            assert_eq!(s.count_outbox(OutboxState::Delivered).await.unwrap(), 1);
            assert_eq!(s.count_outbox(OutboxState::Pending).await.unwrap(), 0);

            assert_eq!(s.retry_dead(RetryTarget::AllDead, 60_000).await.unwrap(), 1);
            let revived = s.outbox_for_call("z").await.unwrap().unwrap();
            assert_eq!(revived.state, OutboxState::Pending);
            assert!(revived.give_up_at.unwrap() > now_ms());
            assert_eq!(
                s.retry_dead(RetryTarget::One(revived.id), 1).await.unwrap(),
                0
            );
            // A restart makes every pending entry due at once.
            let leased = s.lease_due(now_ms(), 10, now_ms() + 1_000).await.unwrap();
            s.mark_failed(
                revived.id,
                leased[0].lease.unwrap(),
                "HTTP 502",
                now_ms() + 3_600_000,
                false,
            )
            .await
            .unwrap();
            assert_eq!(s.retry_pending_now().await.unwrap(), 1);
            assert!(s.next_due().await.unwrap().unwrap() <= now_ms());
            // An entry out with a replica right now is left to it.
            let out = s.lease_due(now_ms(), 10, now_ms() + 60_000).await.unwrap();
            assert_eq!(out.len(), 1);
            assert_eq!(
                s.retry_pending_now().await.unwrap(),
                0,
                "leased: not made due"
            );
            assert!(
                s.lease_due(now_ms(), 10, now_ms() + 60_000)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
    }

    /// A slow attempt outlives its lease; the entry is leased again. The old attempt's late
    /// failure must not undo what the new lease decided, and nothing undoes a delivery.
    #[tokio::test]
    async fn outbox_state_only_moves_forward() {
        for (_d, s, _) in crate::storage::test_backends().await {
            s.report_dialer_call(report("m", &["m"])).await.unwrap();
            let now = now_ms();
            let first = s.lease_due(now, 1, now + 1_000).await.unwrap().remove(0);
            let second = s
                .lease_due(now + 1_000, 1, now + 2_000)
                .await
                .unwrap()
                .remove(0);
            assert_ne!(first.lease, second.lease);
            // The expired lease's failure is not applied: no attempt counted, no new time.
            s.mark_failed(
                first.id,
                first.lease.unwrap(),
                "HTTP 500",
                now + 60_000,
                true,
            )
            .await
            .unwrap();
            let e = s.outbox_for_call("m").await.unwrap().unwrap();
            assert_eq!((e.state, e.attempts), (OutboxState::Pending, 0));
            s.mark_delivered(second.id).await.unwrap();
            // Late results after the delivery change nothing.
            s.mark_failed(second.id, second.lease.unwrap(), "HTTP 503", now, false)
                .await
                .unwrap();
            s.mark_delivered(first.id).await.unwrap();
            let e = s.outbox_for_call("m").await.unwrap().unwrap();
            assert_eq!((e.state, e.attempts), (OutboxState::Delivered, 1));
            assert_eq!(e.last_error, None);
        }
    }
}
