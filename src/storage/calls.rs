//! The `calls` and `call_legs` tables: a call (its id is its first leg's uuid), where it
//! stands, and every other channel uuid known to belong to it.

use futures_util::FutureExt;
use sqlx::AnyConnection;
use sqlx::Row;

use super::executor::Op;
use super::{Storage, StorageError, now_ms};
use crate::domain::values::MaskedPhone;

/// What kind of call a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Click2Call,
    Dialer,
}

impl CallKind {
    pub const ALL: [CallKind; 2] = [CallKind::Click2Call, CallKind::Dialer];

    /// Its name, as stored and as the console's filter says it.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Click2Call => "click2call",
            CallKind::Dialer => "dialer",
        }
    }
    /// The value named `s`, if any.
    pub fn named(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub(super) fn parse(s: &str) -> Self {
        if s == "dialer" {
            CallKind::Dialer
        } else {
            CallKind::Click2Call
        }
    }
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Asked of FreeSWITCH, nothing heard yet.
    Originating,
    /// The operator's phone rings.
    Ringing,
    Answered,
    /// Hung up after it was up.
    Ended,
    /// Never came up (busy, not registered, no answer...); the outcome says why.
    Failed,
}

impl CallState {
    pub const ALL: [CallState; 5] = [
        CallState::Originating,
        CallState::Ringing,
        CallState::Answered,
        CallState::Ended,
        CallState::Failed,
    ];

    /// Its name, as stored and as the console's filter says it.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Originating => "originating",
            CallState::Ringing => "ringing",
            CallState::Answered => "answered",
            CallState::Ended => "ended",
            CallState::Failed => "failed",
        }
    }

    /// The value named `s`, if any.
    pub fn named(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub(super) fn parse(s: &str) -> Self {
        match s {
            "ringing" => CallState::Ringing,
            "answered" => CallState::Answered,
            "ended" => CallState::Ended,
            "failed" => CallState::Failed,
            _ => CallState::Originating,
        }
    }
}

/// A call to record: named fields, so a ramal can never be stored as a telefone.
#[derive(Clone, Copy)]
pub struct NewCall<'a> {
    pub id: &'a str,
    pub kind: CallKind,
    pub ramal: Option<&'a str>,
    pub telefone: Option<&'a str>,
    pub crm_id: Option<&'a str>,
    pub state: CallState,
    /// Where FreeSWITCH was told to record the call, when we chose the path.
    pub recording_path: Option<&'a str>,
    /// The FreeSWITCH node the call is on (`None`: the first).
    pub node: Option<&'a str>,
}

/// A call as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub id: String,
    pub kind: CallKind,
    pub ramal: Option<String>,
    pub telefone: Option<String>,
    pub crm_id: Option<String>,
    pub state: CallState,
    pub outcome: Option<String>,
    pub recording_path: Option<String>,
    pub recording_state: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// The FreeSWITCH node of the call (`None`: the first, or from before nodes).
    pub node: Option<String>,
}

impl std::fmt::Debug for NewCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCall")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("ramal", &self.ramal)
            .field("telefone", &MaskedPhone(self.telefone))
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CallRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("ramal", &self.ramal)
            .field("telefone", &MaskedPhone(self.telefone.as_deref()))
            .field("crm_id", &self.crm_id)
            .field("state", &self.state)
            .field("outcome", &self.outcome)
            .field("created_at", &self.created_at)
            .field("answered_at", &self.answered_at)
            .field("ended_at", &self.ended_at)
            .finish_non_exhaustive()
    }
}

/// A call as written: owned, so it can wait in the executor's queue.
struct CallRow {
    id: String,
    kind: CallKind,
    ramal: Option<String>,
    telefone: Option<String>,
    crm_id: Option<String>,
    state: CallState,
    recording_path: Option<String>,
    node: Option<String>,
    at: i64,
}

impl Storage {
    /// Records a new call once committed; its id is its first leg's uuid (see `link_leg`).
    pub async fn insert_call(&self, call: NewCall<'_>) -> Result<(), StorageError> {
        let row = CallRow {
            id: call.id.to_string(),
            kind: call.kind,
            ramal: call.ramal.map(str::to_string),
            telefone: call.telefone.map(str::to_string),
            crm_id: call.crm_id.map(str::to_string),
            state: call.state,
            recording_path: call.recording_path.map(str::to_string),
            node: call.node.map(str::to_string),
            at: now_ms(),
        };
        self.exec
            .run(Op::one("insert_call"), move |c| insert(c, row).boxed())
            .await
    }

    /// Ties another channel uuid (e.g. the other leg of a bridge) to a call.
    pub async fn link_leg(&self, leg_id: &str, call_id: &str) -> Result<(), StorageError> {
        let (leg, call) = (leg_id.to_string(), call_id.to_string());
        self.exec
            .run(Op::one("link_leg"), move |c| {
                async move {
                    sqlx::query(
                        "INSERT INTO call_legs (leg_id, call_id) VALUES ($1, $2) ON CONFLICT (leg_id) DO NOTHING",
                    )
                    .bind(leg)
                    .bind(call)
                    .execute(c)
                    .await
                    .map(drop)
                }
                .boxed()
            })
            .await
    }

    /// Updates a call's state and, when given, its outcome; stamps first answer and end.
    pub async fn set_call_state(
        &self,
        id: &str,
        state: CallState,
        outcome: Option<&str>,
    ) -> Result<(), StorageError> {
        let now = now_ms();
        let (id, outcome) = (id.to_string(), outcome.map(str::to_string));
        let answered_at = (state == CallState::Answered).then_some(now);
        let ended_at = matches!(state, CallState::Ended | CallState::Failed).then_some(now);
        self.exec
            .run(Op::one("set_call_state"), move |c| {
                async move {
                    sqlx::query(
                        "UPDATE calls SET state = $2, outcome = COALESCE($3, outcome),
                            answered_at = COALESCE(answered_at, $4), ended_at = COALESCE(ended_at, $5)
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(state.as_str())
                    .bind(outcome)
                    .bind(answered_at)
                    .bind(ended_at)
                    .execute(c)
                    .await
                    .map(drop)
                }
                .boxed()
            })
            .await
    }

    /// The call that `id` (the call id or any of its legs) belongs to.
    pub async fn find_call(&self, id: &str) -> Result<Option<CallRecord>, StorageError> {
        let row = sqlx::query(
            "SELECT c.id, c.kind, c.ramal, c.telefone, c.crm_id, c.state, c.outcome, c.recording_path, c.recording_state, c.created_at, c.answered_at, c.ended_at, c.node
             FROM calls c
             WHERE c.id = $1 OR c.id = (SELECT call_id FROM call_legs WHERE leg_id = $1)
             LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| CallRecord {
            id: r.get(0),
            kind: CallKind::parse(r.get::<&str, _>(1)),
            ramal: r.get(2),
            telefone: r.get(3),
            crm_id: r.get(4),
            state: CallState::parse(r.get::<&str, _>(5)),
            outcome: r.get(6),
            recording_path: r.get(7),
            recording_state: r.get(8),
            created_at: r.get(9),
            answered_at: r.get(10),
            ended_at: r.get(11),
            node: r.get(12),
        }))
    }
}

async fn insert(c: &mut AnyConnection, row: CallRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO calls (id, kind, ramal, telefone, crm_id, state, recording_path, created_at, node)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(row.id)
    .bind(row.kind.as_str())
    .bind(row.ramal)
    .bind(row.telefone)
    .bind(row.crm_id)
    .bind(row.state.as_str())
    .bind(row.recording_path)
    .bind(row.at)
    .bind(row.node)
    .execute(c)
    .await
    .map(drop)
}

/// The call one of these uuids names or belongs to, if any.
pub(super) async fn of_any(
    c: &mut AnyConnection,
    a: &str,
    b: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM calls WHERE id IN ($1, $2)
         UNION SELECT call_id FROM call_legs WHERE leg_id IN ($1, $2)
         LIMIT 1",
    )
    .bind(a)
    .bind(b)
    .fetch_optional(c)
    .await
}

/// An operator answered a dialer call: it is recorded as answered now.
pub(super) async fn insert_answered_dialer(
    c: &mut AnyConnection,
    id: &str,
    ramal: Option<&str>,
    telefone: Option<&str>,
    crm_id: &str,
    node: Option<&str>,
    at: i64,
) -> Result<(), sqlx::Error> {
    // Another replica's report of the same call: the outbox's unique call id decides.
    sqlx::query(
        "INSERT INTO calls (id, kind, ramal, telefone, crm_id, state, created_at, answered_at, node)
         VALUES ($1, 'dialer', $2, $3, $4, 'answered', $5, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(ramal)
    .bind(telefone)
    .bind(crm_id)
    .bind(at)
    .bind(node)
    .execute(c)
    .await
    .map(drop)
}

/// Moves `leg` to `call_id` (from whatever call it belonged to before).
pub(super) async fn link_to(
    c: &mut AnyConnection,
    leg: &str,
    call_id: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO call_legs (leg_id, call_id, linked_at) VALUES ($1, $2, $3)
         ON CONFLICT (leg_id) DO UPDATE SET call_id = excluded.call_id, linked_at = excluded.linked_at
         WHERE call_legs.call_id <> excluded.call_id",
    )
    .bind(leg)
    .bind(call_id)
    .bind(at)
    .execute(c)
    .await
    .map(drop)
}

/// A bridge joined `a` and `b`: legs join calls only while the call lives. A leg of an ended
/// call bridged to a new one (an operator taking the next customer) brings it no old call,
/// and is itself moved to the live call.
pub(super) async fn link_bridge(
    c: &mut AnyConnection,
    a: &str,
    b: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    for (known, other) in [(a, b), (b, a)] {
        sqlx::query(
            "INSERT INTO call_legs (leg_id, call_id, linked_at)
             SELECT $2, c.id, $3 FROM calls c
              WHERE c.ended_at IS NULL
                AND (c.id = $1 OR c.id = (SELECT call_id FROM call_legs WHERE leg_id = $1))
              LIMIT 1
             ON CONFLICT (leg_id) DO UPDATE SET call_id = excluded.call_id, linked_at = excluded.linked_at
              WHERE call_legs.call_id <> excluded.call_id
                AND (SELECT ended_at FROM calls WHERE id = call_legs.call_id) IS NOT NULL",
        )
        .bind(known)
        .bind(other)
        .bind(at)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// `leg` hung up: a dialer call ends with its call leg or any leg linked to it now
/// (click2call calls follow their own task).
pub(super) async fn end_dialer_call_of(
    c: &mut AnyConnection,
    leg: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE calls SET state = 'ended', ended_at = COALESCE(ended_at, $2)
         WHERE kind = 'dialer' AND state = 'answered'
           AND (id = $1 OR id = (SELECT call_id FROM call_legs WHERE leg_id = $1))",
    )
    .bind(leg)
    .bind(at)
    .execute(c)
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn any_leg_finds_its_call() {
        for (_d, s, _) in crate::storage::test_backends().await {
            s.insert_call(NewCall {
                id: "a",
                kind: CallKind::Dialer,
                ramal: Some("1001"),
                telefone: Some("4199"),
                crm_id: Some("CRM-1"),
                state: CallState::Answered,
                recording_path: None,
                node: None,
            })
            .await
            .unwrap();
            s.link_leg("b", "a").await.unwrap();
            let c = s.find_call("b").await.unwrap().unwrap();
            assert_eq!(c.id, "a");
            assert_eq!(c.kind, CallKind::Dialer);
            assert_eq!(c.crm_id.as_deref(), Some("CRM-1"));
            assert_eq!(c.state, CallState::Answered);
            assert!(s.find_call("zzz").await.unwrap().is_none());
            s.set_call_state("a", CallState::Ended, Some("NORMAL_CLEARING"))
                .await
                .unwrap();
            assert_eq!(
                s.find_call("a").await.unwrap().unwrap().outcome.as_deref(),
                Some("NORMAL_CLEARING")
            );
            let c = s.find_call("a").await.unwrap().unwrap();
            assert!(c.ended_at.is_some_and(|t| t >= c.created_at));
            assert_eq!(c.answered_at, None, "inserted as answered, never set");
        }
    }

    #[test]
    fn debug_output_never_shows_a_phone_number() {
        let new = NewCall {
            id: "c1",
            kind: CallKind::Click2Call,
            ramal: Some("1001"),
            telefone: Some("41988445566"),
            crm_id: None,
            state: CallState::Ringing,
            recording_path: None,
            node: None,
        };
        let shown = format!("{new:?}");
        assert!(
            !shown.contains("41988445566") && shown.contains("4198****566"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn concurrent_writes_are_grouped_and_a_bad_one_fails_alone() {
        for (_d, s, url) in crate::storage::test_backends().await {
            let ids: Vec<String> = (0..300).map(|i| format!("call-{i}")).collect();
            let mut tasks = Vec::new();
            for id in ids.clone() {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    s.insert_call(NewCall {
                        id: &id,
                        kind: CallKind::Click2Call,
                        ramal: Some("1001"),
                        telefone: Some("41988445566"),
                        crm_id: None,
                        state: CallState::Originating,
                        recording_path: None,
                        node: None,
                    })
                    .await
                }));
            }
            // The same id again, racing with the others: only it fails.
            let dup = s
                .insert_call(NewCall {
                    id: "call-0",
                    kind: CallKind::Click2Call,
                    ramal: None,
                    telefone: None,
                    crm_id: None,
                    state: CallState::Originating,
                    recording_path: None,
                    node: None,
                })
                .await;
            let mut ok = 0;
            for t in tasks {
                if t.await.unwrap().is_ok() {
                    ok += 1;
                }
            }
            assert!(ok >= 299, "{ok}");
            assert_eq!(
                ok + usize::from(dup.is_ok()),
                300,
                "exactly one of the two call-0 failed"
            );
            // Committed before each caller returned, so durable across a reopen.
            s.close().await;
            let s = Storage::open(&url).await.unwrap();
            for id in &ids {
                assert!(s.find_call(id).await.unwrap().is_some(), "{id}");
            }
            assert!(matches!(
                s.set_call_state("call-1", CallState::Answered, None).await,
                Ok(())
            ));
            s.close().await;
            assert!(
                s.set_call_state("call-1", CallState::Ended, None)
                    .await
                    .is_err()
            );
        }
    }
}
