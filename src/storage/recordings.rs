//! Where recordings are: what FreeSWITCH's RECORD_START / RECORD_STOP said about each leg,
//! and which legs a bridge joined to a known call.

use futures_util::FutureExt;
use sqlx::AnyConnection;
use sqlx::Row;

use super::executor::Op;
use super::{Storage, StorageError, calls, now_ms};

/// Where a recording stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingState {
    /// RECORD_START seen, neither RECORD_STOP nor the leg's hangup yet: still being written.
    Recording,
    /// Closed, header final.
    Done,
    /// FreeSWITCH deleted it (too short or empty).
    Discarded,
}

impl RecordingState {
    fn as_str(self) -> &'static str {
        match self {
            RecordingState::Recording => "recording",
            RecordingState::Done => "done",
            RecordingState::Discarded => "discarded",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "recording" => RecordingState::Recording,
            "discarded" => RecordingState::Discarded,
            _ => RecordingState::Done,
        }
    }
}

/// One recording of one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRow {
    pub leg_id: String,
    pub path: String,
    pub state: RecordingState,
    pub cause: Option<String>,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
}

/// What the event stream says about recordings, applied in the order it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingEvent {
    Started {
        leg: String,
        path: String,
    },
    Stopped {
        leg: String,
        path: String,
        cause: Option<String>,
        discarded: bool,
    },
    HungUp {
        leg: String,
        path: Option<String>,
    },
    Bridged {
        a: String,
        b: String,
    },
}

impl RecordingEvent {
    /// What the operation is: its name in logs (never its paths), and its statements.
    fn op(&self) -> Op {
        match self {
            RecordingEvent::Started { .. } => Op::one("recording_started"),
            RecordingEvent::Stopped { .. } => Op::one("recording_stopped"),
            RecordingEvent::HungUp { .. } => Op::independent("leg_hung_up"),
            RecordingEvent::Bridged { .. } => Op::independent("link_bridge"),
        }
    }
}

impl Storage {
    /// Queues an event's write behind the ones before it, without waiting for the commit.
    pub async fn queue_recording_event(&self, e: RecordingEvent) -> Result<(), StorageError> {
        let at = now_ms();
        self.exec
            .submit(e.op(), move |c| apply(c, e, at).boxed())
            .await
    }

    /// Applies an event and returns once it is committed.
    async fn record(&self, e: RecordingEvent) -> Result<(), StorageError> {
        let at = now_ms();
        self.exec
            .run(e.op(), move |c| apply(c, e, at).boxed())
            .await
    }

    /// RECORD_START: `leg` writes `path`.
    pub async fn recording_started(&self, leg: &str, path: &str) -> Result<(), StorageError> {
        self.record(RecordingEvent::Started {
            leg: leg.into(),
            path: path.into(),
        })
        .await
    }

    /// RECORD_STOP: the file is closed (or was deleted, when `discarded`).
    pub async fn recording_stopped(
        &self,
        leg: &str,
        path: &str,
        cause: Option<&str>,
        discarded: bool,
    ) -> Result<(), StorageError> {
        self.record(RecordingEvent::Stopped {
            leg: leg.into(),
            path: path.into(),
            cause: cause.map(str::to_string),
            discarded,
        })
        .await
    }

    /// The leg hung up: any recording of it still open is complete (its RECORD_STOP was
    /// missed); a path the dialplan set in `record_file_path` is learnt if unknown.
    pub async fn leg_hung_up(
        &self,
        leg: &str,
        path_variable: Option<&str>,
    ) -> Result<(), StorageError> {
        self.record(RecordingEvent::HungUp {
            leg: leg.into(),
            path: path_variable.map(str::to_string),
        })
        .await
    }

    /// A bridge joined `a` and `b`: if one belongs to a call, so does the other.
    pub async fn link_bridge(&self, a: &str, b: &str) -> Result<(), StorageError> {
        self.record(RecordingEvent::Bridged {
            a: a.into(),
            b: b.into(),
        })
        .await
    }

    /// Every recording of call `call_id`, newest first: its own leg's, and those of legs
    /// linked to it that were still running, or stopped, after the leg joined the call (an
    /// operator's leg also carries its earlier customers' recordings).
    pub async fn recordings_for_call(
        &self,
        call_id: &str,
    ) -> Result<Vec<RecordingRow>, StorageError> {
        let rows = sqlx::query(
            "SELECT r.leg_id, r.path, r.state, r.cause, r.started_at, r.stopped_at FROM recordings r
             WHERE r.leg_id = $1
                OR EXISTS (SELECT 1 FROM call_legs l
                            WHERE l.call_id = $1 AND l.leg_id = r.leg_id
                              AND (l.linked_at IS NULL OR r.stopped_at IS NULL
                                   OR r.stopped_at >= l.linked_at))
             ORDER BY COALESCE(r.started_at, r.stopped_at) DESC",
        )
        .bind(call_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| RecordingRow {
                leg_id: r.get(0),
                path: r.get(1),
                state: RecordingState::parse(r.get::<&str, _>(2)),
                cause: r.get(3),
                started_at: r.get(4),
                stopped_at: r.get(5),
            })
            .collect())
    }

    /// Channels that may still be up as far as storage knows, after `after_leg` (for
    /// paging): legs with a recording still open, answered dialer calls not ended, and
    /// click2call calls not ended that were created before `orphaned_before` (no task of
    /// this process follows them). Each with whether it names a call (to end it).
    pub async fn open_legs(
        &self,
        orphaned_before: i64,
        after_leg: &str,
        limit: i64,
    ) -> Result<Vec<(String, bool)>, StorageError> {
        let rows = sqlx::query(
            "SELECT leg, MAX(is_call) FROM (
                SELECT leg_id AS leg, 0 AS is_call FROM recordings WHERE state = 'recording'
                UNION ALL
                SELECT id, 1 FROM calls WHERE ended_at IS NULL
                    AND ((kind = 'dialer' AND state = 'answered') OR created_at < $1)
             ) AS open WHERE leg > $2 GROUP BY leg ORDER BY leg LIMIT $3",
        )
        .bind(orphaned_before)
        .bind(after_leg)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1) == 1))
            .collect())
    }

    /// Every leg uuid of a call (the call id first).
    pub async fn legs_of(&self, call_id: &str) -> Result<Vec<String>, StorageError> {
        let mut legs: Vec<String> =
            sqlx::query_scalar("SELECT leg_id FROM call_legs WHERE call_id = $1 ORDER BY leg_id")
                .bind(call_id)
                .fetch_all(&self.pool)
                .await?;
        legs.retain(|l| l != call_id);
        legs.insert(0, call_id.to_string());
        Ok(legs)
    }
}

/// One event's statements, in one operation.
async fn apply(c: &mut AnyConnection, e: RecordingEvent, at: i64) -> Result<(), sqlx::Error> {
    match e {
        RecordingEvent::Started { leg, path } => {
            sqlx::query(
                "INSERT INTO recordings (leg_id, path, state, started_at) VALUES ($1, $2, 'recording', $3)
                 ON CONFLICT (leg_id, path) DO UPDATE SET state = 'recording', started_at = $3, stopped_at = NULL, cause = NULL",
            )
            .bind(leg)
            .bind(path)
            .bind(at)
            .execute(c)
            .await?;
        }
        RecordingEvent::Stopped {
            leg,
            path,
            cause,
            discarded,
        } => {
            let state = if discarded {
                RecordingState::Discarded
            } else {
                RecordingState::Done
            };
            sqlx::query(
                "INSERT INTO recordings (leg_id, path, state, cause, stopped_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (leg_id, path) DO UPDATE SET state = $3, cause = $4, stopped_at = $5",
            )
            .bind(leg)
            .bind(path)
            .bind(state.as_str())
            .bind(cause)
            .bind(at)
            .execute(c)
            .await?;
        }
        RecordingEvent::HungUp { leg, path } => {
            sqlx::query(
                "UPDATE recordings SET state = 'done', cause = COALESCE(cause, 'hangup'), stopped_at = $2
                 WHERE leg_id = $1 AND state = 'recording'",
            )
            .bind(&leg)
            .bind(at)
            .execute(&mut *c)
            .await?;
            calls::end_dialer_call_of(&mut *c, &leg, at).await?;
            if let Some(path) = path {
                sqlx::query(
                    "INSERT INTO recordings (leg_id, path, state, cause, stopped_at) VALUES ($1, $2, 'done', 'hangup', $3)
                     ON CONFLICT (leg_id, path) DO NOTHING",
                )
                .bind(leg)
                .bind(path)
                .bind(at)
                .execute(c)
                .await?;
            }
        }
        RecordingEvent::Bridged { a, b } => calls::link_bridge(c, &a, &b, at).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{CallKind, CallState, NewCall};

    #[tokio::test]
    async fn recordings_follow_their_legs_and_bridges() {
        for (_dir, s, _) in crate::storage::test_backends().await {
            s.insert_call(NewCall {
                id: "op",
                kind: CallKind::Click2Call,
                ramal: Some("1001"),
                telefone: Some("41988445566"),
                crm_id: None,
                state: CallState::Answered,
                recording_path: None,
                node: None,
            })
            .await
            .unwrap();
            // The customer's leg records; a bridge ties it to the call.
            s.recording_started("cust", "/r/cust.wav").await.unwrap();
            assert!(s.recordings_for_call("op").await.unwrap().is_empty());
            s.link_bridge("cust", "op").await.unwrap();
            let r = s.recordings_for_call("op").await.unwrap();
            assert_eq!((r.len(), r[0].state), (1, RecordingState::Recording));
            // Any leg finds the call; unknown pairs link nothing.
            assert_eq!(s.find_call("cust").await.unwrap().unwrap().id, "op");
            s.link_bridge("x", "y").await.unwrap();
            assert!(s.find_call("x").await.unwrap().is_none());
            s.recording_stopped("cust", "/r/cust.wav", Some("success-silence"), false)
                .await
                .unwrap();
            let r = s.recordings_for_call("op").await.unwrap();
            assert_eq!(r[0].state, RecordingState::Done);
            assert_eq!(r[0].cause.as_deref(), Some("success-silence"));
            // A missed RECORD_STOP is closed by the hangup; a dialplan path is learnt from it.
            s.recording_started("op", "/r/op.wav").await.unwrap();
            s.leg_hung_up("op", Some("/r/op2.wav")).await.unwrap();
            let r = s.recordings_for_call("op").await.unwrap();
            assert_eq!(r.len(), 3);
            assert!(r.iter().all(|x| x.state == RecordingState::Done), "{r:?}");
            s.recording_stopped("op", "/r/short.wav", None, true)
                .await
                .unwrap();
            assert!(
                s.recordings_for_call("op")
                    .await
                    .unwrap()
                    .iter()
                    .any(|x| x.state == RecordingState::Discarded)
            );
            assert_eq!(s.legs_of("op").await.unwrap(), ["op", "cust"]);
        }
    }
}
