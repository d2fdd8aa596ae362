//! Reads for operators (the console, `outbox list`, the gauges): the calls of a recent window
//! with what a supervisor asks about them, and the outbox by state. Each query is bounded by
//! an index (calls by `created_at`, delivered webhooks by `delivered_at`, the others by
//! state) and a row limit, so a long history costs nothing per page.

use sqlx::Row;

use super::outbox::{entry, entry_columns};
use super::{CallKind, CallState, OutboxEntry, OutboxState, Storage, StorageError};
use crate::domain::values::MaskedPhone;

/// Which calls to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Calls created at or after this (unix ms).
    pub since: i64,
    pub kind: Option<CallKind>,
    pub state: Option<CallState>,
    pub ramal: Option<String>,
    /// Digits the number contains.
    pub number: Option<String>,
    pub limit: i64,
}

/// One call as the console shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct CallSummary {
    pub id: String,
    pub kind: CallKind,
    pub state: CallState,
    pub outcome: Option<String>,
    pub ramal: Option<String>,
    pub telefone: Option<String>,
    pub crm_id: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// Channels of the call (its own leg included).
    pub legs: i64,
    /// Recording rows of its legs that are closed and kept (`done`).
    pub recordings: i64,
}

impl std::fmt::Debug for CallSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSummary")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("telefone", &MaskedPhone(self.telefone.as_deref()))
            .finish_non_exhaustive()
    }
}

/// The calls of a window, by `calls_created_at`; legs by `call_legs_call_id`, recordings by
/// their primary key (the plan is checked by a test).
macro_rules! recent_calls {
    ($find:literal) => {
        concat!("SELECT c.id, c.kind, c.state, c.outcome, c.ramal, c.telefone, c.crm_id,
                    c.created_at, c.answered_at, c.ended_at,
                    1 + (SELECT COUNT(*) FROM call_legs l WHERE l.call_id = c.id AND l.leg_id <> c.id),
                    (SELECT COUNT(*) FROM recordings r
                      WHERE r.state = 'done'
                        AND (r.leg_id = c.id
                             OR r.leg_id IN (SELECT leg_id FROM call_legs WHERE call_id = c.id)))
               FROM calls c
              WHERE c.created_at >= $1
                AND ($2 IS NULL OR c.kind = $2)
                AND ($3 IS NULL OR c.state = $3)
                AND ($4 IS NULL OR c.ramal = $4)
                AND ($5 IS NULL OR ", $find, "(c.telefone, $5) > 0)
              ORDER BY c.created_at DESC, c.id
              LIMIT $6")
    };
}
/// `instr` and `strpos` are each engine's "position of a substring" (no LIKE: no wildcard to
/// escape).
const RECENT_CALLS_SQLITE: &str = recent_calls!("instr");
const RECENT_CALLS_POSTGRES: &str = recent_calls!("strpos");

/// Delivered webhooks by `outbox_delivered_at`, named on SQLite: without statistics its
/// planner sometimes takes `outbox_due (state=?)` instead, which reads every delivered webhook
/// ever kept (seen in this crate's own test runs). PostgreSQL has statistics and no such
/// syntax.
macro_rules! delivered_since {
    ($indexed_by:literal) => {
        concat!(
            "SELECT ",
            entry_columns!(),
            " FROM outbox ",
            $indexed_by,
            " WHERE state = 'delivered' AND delivered_at >= $1
             ORDER BY delivered_at DESC LIMIT $2"
        )
    };
}
const DELIVERED_SINCE_SQLITE: &str = delivered_since!("INDEXED BY outbox_delivered_at");
const DELIVERED_SINCE_POSTGRES: &str = delivered_since!("");

impl Storage {
    /// Calls matching `filter`, newest first.
    pub async fn recent_calls(
        &self,
        filter: &CallFilter,
    ) -> Result<Vec<CallSummary>, StorageError> {
        let rows = sqlx::query(
            self.backend
                .pick(RECENT_CALLS_SQLITE, RECENT_CALLS_POSTGRES),
        )
        .bind(filter.since)
        .bind(filter.kind.map(CallKind::as_str))
        .bind(filter.state.map(CallState::as_str))
        .bind(filter.ramal.as_deref())
        .bind(filter.number.as_deref())
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CallSummary {
                id: r.get(0),
                kind: CallKind::parse(r.get::<&str, _>(1)),
                state: CallState::parse(r.get::<&str, _>(2)),
                outcome: r.get(3),
                ramal: r.get(4),
                telefone: r.get(5),
                crm_id: r.get(6),
                created_at: r.get(7),
                answered_at: r.get(8),
                ended_at: r.get(9),
                legs: r.get(10),
                recordings: r.get(11),
            })
            .collect())
    }

    /// Webhooks delivered at or after `since` (unix ms), newest first.
    pub async fn delivered_since(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        let rows = sqlx::query(
            self.backend
                .pick(DELIVERED_SINCE_SQLITE, DELIVERED_SINCE_POSTGRES),
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(entry).collect())
    }
}

/// The outbox as operators and gauges read it (the CLI's `outbox list`, the console).
impl Storage {
    /// Entries in `state`, newest first.
    pub async fn list_outbox(
        &self,
        state: OutboxState,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM outbox WHERE state = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(state.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(entry).collect())
    }

    /// Entries in `state` (index-backed: cheap for pending and dead, which stay small).
    pub async fn count_outbox(&self, state: OutboxState) -> Result<i64, StorageError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = $1")
            .bind(state.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// When the oldest webhook still waiting was stored (unix ms), if any is waiting.
    pub async fn oldest_pending(&self) -> Result<Option<i64>, StorageError> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT MIN(created_at) FROM outbox WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(at)
    }

    /// The outbox entry of a call, if any.
    pub async fn outbox_for_call(
        &self,
        call_id: &str,
    ) -> Result<Option<OutboxEntry>, StorageError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM outbox WHERE call_id = $1"
        ))
        .bind(call_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{DialerReport, NewCall, now_ms, test_storage};

    /// What "bounded by an index" means, as SQLite plans it: no statement of the console
    /// reads a whole table (a `SCAN` of `calls`, `call_legs`, `recordings` or `outbox`).
    #[tokio::test]
    async fn the_console_reads_go_through_indexes() {
        let (_d, s, _) = test_storage().await;
        for (sql, index) in [
            (RECENT_CALLS_SQLITE, "calls_created_at"),
            (DELIVERED_SINCE_SQLITE, "outbox_delivered_at"),
        ] {
            // EXPLAIN QUERY PLAN rows: id, parent, notused, detail.
            let plan: Vec<String> =
                sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(&s.pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| sqlx::Row::get::<String, _>(r, 3))
                    .collect();
            assert!(plan.iter().any(|d| d.contains(index)), "{plan:?}");
            for table in ["calls", "call_legs", "recordings", "outbox"] {
                assert!(
                    !plan.iter().any(|d| d.starts_with(&format!("SCAN {table}"))
                        || d.starts_with("SCAN c ")
                        || d == "SCAN c"),
                    "a full scan of {table}: {plan:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn recent_calls_filter_and_count_legs_and_recordings() {
        for (_d, s, _) in crate::storage::test_backends().await {
            let call = |id: &'static str, ramal: &'static str, telefone: &'static str| NewCall {
                id,
                kind: CallKind::Click2Call,
                ramal: Some(ramal),
                telefone: Some(telefone),
                crm_id: None,
                state: CallState::Ringing,
                recording_path: None,
                node: None,
            };
            s.insert_call(call("a", "1001", "41988445566"))
                .await
                .unwrap();
            s.insert_call(call("b", "1002", "11999990000"))
                .await
                .unwrap();
            s.link_leg("a-customer", "a").await.unwrap();
            s.recording_started("a-customer", "/r/a.wav").await.unwrap();
            s.recording_stopped("a-customer", "/r/a.wav", None, false)
                .await
                .unwrap();
            s.set_call_state("b", CallState::Failed, Some("USER_BUSY"))
                .await
                .unwrap();
            let all = CallFilter {
                since: now_ms() - 60_000,
                limit: 10,
                ..CallFilter::default()
            };
            let calls = s.recent_calls(&all).await.unwrap();
            assert_eq!(calls.len(), 2);
            let a = calls.iter().find(|c| c.id == "a").unwrap();
            assert_eq!((a.legs, a.recordings), (2, 1));
            let failed = s
                .recent_calls(&CallFilter {
                    state: Some(CallState::Failed),
                    ..all.clone()
                })
                .await
                .unwrap();
            assert_eq!(failed.len(), 1);
            assert_eq!(failed[0].outcome.as_deref(), Some("USER_BUSY"));
            let by_number = s
                .recent_calls(&CallFilter {
                    number: Some("8844".into()),
                    ..all.clone()
                })
                .await
                .unwrap();
            assert_eq!(by_number[0].id, "a");
            let by_ramal = s
                .recent_calls(&CallFilter {
                    ramal: Some("1002".into()),
                    kind: Some(CallKind::Click2Call),
                    ..all.clone()
                })
                .await
                .unwrap();
            assert_eq!(by_ramal.len(), 1);
            let dialer = s
                .recent_calls(&CallFilter {
                    kind: Some(CallKind::Dialer),
                    ..all.clone()
                })
                .await
                .unwrap();
            assert!(dialer.is_empty());
            let later = s
                .recent_calls(&CallFilter {
                    since: now_ms() + 60_000,
                    ..all
                })
                .await
                .unwrap();
            assert!(later.is_empty(), "outside the window");

            s.report_dialer_call(DialerReport {
                call_id: "d".into(),
                customer_leg: "d".into(),
                crm_id: "1".into(),
                telefone: None,
                ramal: None,
                legs: vec!["d".into()],
                give_up_at: now_ms() + 60_000,
                url: "http://finaz/x?cid=d".into(),
                node: None,
            })
            .await
            .unwrap();
            let leased = s.lease_due(now_ms(), 10, now_ms() + 1_000).await.unwrap();
            let before = now_ms();
            s.mark_delivered(leased[0].id).await.unwrap();
            let delivered = s.delivered_since(before - 1, 10).await.unwrap();
            assert_eq!(delivered.len(), 1);
            assert!(
                s.delivered_since(now_ms() + 1, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
    }
}
