//! Click2call claims: the double-click and Idempotency-Key memory in the database, so a
//! repeated click joins the first attempt whichever replica took either, and a key outlives
//! a restart.
//!
//! A claim is one row per key (`pair:RAMAL:TELEFONE`, `key:KEY`) with its window's expiry;
//! the rows of one attempt share its `owner` and, once known, its outcome. Two replicas
//! claiming the same key at once are ordered by the primary key: the second's upsert finds
//! the first's row and joins it. Expired rows are removed a batch at a time by one claim in
//! sixteen, so no claim scans the table.

use futures_util::FutureExt;
use sqlx::{AnyConnection, Row};

use super::executor::Op;
use super::{Backend, Storage, StorageError, now_ms};

/// One claim in this many removes expired rows, up to [`EXPIRE_AT_ONCE`] (each claim adds at
/// most two): the others spare the statement.
const EXPIRE_EVERY: u32 = 16;
const EXPIRE_AT_ONCE: i64 = 128;

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// A new attempt, named `owner`: place the call and settle the claim.
    Own { owner: i64 },
    /// An attempt within its window, maybe on another replica: wait for its outcome.
    Join { owner: i64 },
    /// The Idempotency-Key was used for another ramal or telefone.
    KeyReused,
}

/// Where an attempt stands, as its claim says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Running,
    Placed {
        call_id: String,
        answered: bool,
    },
    /// The attempt failed: the click2call engine's own code for why.
    Failed(String),
}

/// One attempt to claim, with the windows in milliseconds (0: that key is not remembered).
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub ramal: String,
    pub telefone: String,
    pub idempotency_key: Option<String>,
    pub pair_window_ms: i64,
    pub key_window_ms: i64,
}

impl Storage {
    /// Claims the attempt's keys, or finds the attempt that holds them.
    pub async fn claim_click2call(&self, req: ClaimRequest) -> Result<Claimed, StorageError> {
        let backend = self.backend;
        // Without a key: at most an expiry and one upsert, each a fact on its own.
        let op = if req.idempotency_key.is_some() {
            Op::several("claim_click2call")
        } else {
            Op::independent("claim_click2call")
        };
        self.exec
            .run(op, move |c| claim(c, backend, req, now_ms()).boxed())
            .await
    }

    /// Records how the attempt `owner` ended, for the clicks that joined it.
    pub async fn settle_click2call(
        &self,
        owner: i64,
        outcome: ClaimOutcome,
    ) -> Result<(), StorageError> {
        self.exec
            .run(Op::one("settle_click2call"), move |c| {
                async move {
                    let (call_id, answered, failure) = match outcome {
                        ClaimOutcome::Running => return Ok(()),
                        ClaimOutcome::Placed { call_id, answered } => {
                            (Some(call_id), Some(i64::from(answered)), None)
                        }
                        ClaimOutcome::Failed(code) => (None, None, Some(code)),
                    };
                    sqlx::query(
                        "UPDATE click2call_claims SET call_id = $2, answered = $3, failure = $4
                          WHERE owner = $1",
                    )
                    .bind(owner)
                    .bind(call_id)
                    .bind(answered)
                    .bind(failure)
                    .execute(c)
                    .await
                    .map(drop)
                }
                .boxed()
            })
            .await
    }

    /// The outcome of attempt `owner`, or `None` when its claim is gone (expired).
    pub async fn click2call_outcome(
        &self,
        owner: i64,
    ) -> Result<Option<ClaimOutcome>, StorageError> {
        let row = sqlx::query(
            "SELECT call_id, answered, failure FROM click2call_claims WHERE owner = $1 LIMIT 1",
        )
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| {
            let call_id: Option<String> = r.get(0);
            let answered: Option<i64> = r.get(1);
            let failure: Option<String> = r.get(2);
            match (call_id, failure) {
                (_, Some(code)) => ClaimOutcome::Failed(code),
                (Some(call_id), None) => ClaimOutcome::Placed {
                    call_id,
                    answered: answered == Some(1),
                },
                (None, None) => ClaimOutcome::Running,
            }
        }))
    }
}

/// Inserts `key` for `owner`, or takes it over when its attempt expired or failed; returns
/// the owner that holds the key afterwards. One statement either way (a row kept is
/// rewritten with its own values), so a click without a key costs one round trip.
async fn upsert(
    c: &mut AnyConnection,
    key: &str,
    req: &ClaimRequest,
    owner: i64,
    expires_at: i64,
    now: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO click2call_claims (claim_key, ramal, telefone, owner, expires_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (claim_key) DO UPDATE SET
           ramal = CASE WHEN click2call_claims.expires_at <= $6 OR click2call_claims.failure IS NOT NULL
                        THEN excluded.ramal ELSE click2call_claims.ramal END,
           telefone = CASE WHEN click2call_claims.expires_at <= $6 OR click2call_claims.failure IS NOT NULL
                        THEN excluded.telefone ELSE click2call_claims.telefone END,
           owner = CASE WHEN click2call_claims.expires_at <= $6 OR click2call_claims.failure IS NOT NULL
                        THEN excluded.owner ELSE click2call_claims.owner END,
           call_id = CASE WHEN click2call_claims.expires_at <= $6 OR click2call_claims.failure IS NOT NULL
                        THEN NULL ELSE click2call_claims.call_id END,
           answered = CASE WHEN click2call_claims.expires_at <= $6 OR click2call_claims.failure IS NOT NULL
                        THEN NULL ELSE click2call_claims.answered END,
           expires_at = CASE WHEN click2call_claims.expires_at <= $6 OR click2call_claims.failure IS NOT NULL
                        THEN excluded.expires_at ELSE click2call_claims.expires_at END,
           failure = CASE WHEN click2call_claims.expires_at <= $6 OR click2call_claims.failure IS NOT NULL
                        THEN NULL ELSE click2call_claims.failure END
         RETURNING owner",
    )
    .bind(key)
    .bind(&req.ramal)
    .bind(&req.telefone)
    .bind(owner)
    .bind(expires_at)
    .bind(now)
    .fetch_one(&mut *c)
    .await
}

/// Expired rows, a few at a time. On PostgreSQL claims run at once on several connections:
/// rows another claim is deleting are skipped, not waited for (waiting deadlocked two
/// claims deleting the same rows in different orders: seen in the click2call benchmark).
const EXPIRE_SQLITE: &str = "DELETE FROM click2call_claims WHERE claim_key IN (
    SELECT claim_key FROM click2call_claims WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)";
const EXPIRE_POSTGRES: &str = "WITH old AS (
    SELECT claim_key AS old_key FROM click2call_claims WHERE expires_at <= $1
     ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
  DELETE FROM click2call_claims USING old WHERE claim_key = old.old_key";

async fn claim(
    c: &mut AnyConnection,
    backend: Backend,
    req: ClaimRequest,
    now: i64,
) -> Result<Claimed, sqlx::Error> {
    if fastrand::u32(..EXPIRE_EVERY) == 0 {
        sqlx::query(backend.pick(EXPIRE_SQLITE, EXPIRE_POSTGRES))
            .bind(now)
            .bind(EXPIRE_AT_ONCE)
            .execute(&mut *c)
            .await?;
    }
    let key = req.idempotency_key.as_ref().map(|k| format!("key:{k}"));
    if let Some(key) = &key {
        let held = sqlx::query(
            "SELECT ramal, telefone, owner FROM click2call_claims
              WHERE claim_key = $1 AND expires_at > $2 AND failure IS NULL",
        )
        .bind(key)
        .bind(now)
        .fetch_optional(&mut *c)
        .await?;
        if let Some(r) = held {
            let (ramal, telefone): (String, String) = (r.get(0), r.get(1));
            if ramal != req.ramal || telefone != req.telefone {
                return Ok(Claimed::KeyReused);
            }
            return Ok(Claimed::Join { owner: r.get(2) });
        }
    }
    let mine = fastrand::i64(1..i64::MAX);
    let mut owner = mine;
    if req.pair_window_ms > 0 {
        let pair = format!("pair:{}:{}", req.ramal, req.telefone);
        owner = upsert(c, &pair, &req, mine, now + req.pair_window_ms, now).await?;
    }
    if let Some(key) = &key
        && req.key_window_ms > 0
    {
        // Later retries with this key find the same attempt; a key taken meanwhile by
        // another replica's attempt for the same pair stays with it.
        upsert(c, key, &req, owner, now + req.key_window_ms, now).await?;
    }
    Ok(if owner == mine {
        Claimed::Own { owner }
    } else {
        Claimed::Join { owner }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ramal: &str, key: Option<&str>) -> ClaimRequest {
        ClaimRequest {
            ramal: ramal.into(),
            telefone: "41988445566".into(),
            idempotency_key: key.map(str::to_string),
            pair_window_ms: 5_000,
            key_window_ms: 60_000,
        }
    }

    async fn each_backend(test: impl AsyncFn(Storage)) {
        for (_guard, s, _) in crate::storage::test_backends().await {
            test(s).await;
        }
    }

    #[tokio::test]
    async fn a_second_claim_joins_the_first_and_sees_its_outcome() {
        each_backend(async |s: Storage| {
            let Claimed::Own { owner } = s.claim_click2call(req("1001", Some("K1"))).await.unwrap()
            else {
                panic!("first claim owns")
            };
            assert_eq!(
                s.claim_click2call(req("1001", None)).await.unwrap(),
                Claimed::Join { owner },
                "same pair joins"
            );
            assert_eq!(
                s.claim_click2call(req("1002", Some("K1"))).await.unwrap(),
                Claimed::KeyReused
            );
            assert!(matches!(
                s.claim_click2call(req("1002", None)).await.unwrap(),
                Claimed::Own { .. }
            ));
            assert_eq!(
                s.click2call_outcome(owner).await.unwrap(),
                Some(ClaimOutcome::Running)
            );
            let placed = ClaimOutcome::Placed {
                call_id: "c-1".into(),
                answered: true,
            };
            s.settle_click2call(owner, placed.clone()).await.unwrap();
            assert_eq!(s.click2call_outcome(owner).await.unwrap(), Some(placed));
            s.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_failed_or_expired_attempt_does_not_block_the_next() {
        each_backend(async |s: Storage| {
            let Claimed::Own { owner } = s.claim_click2call(req("1001", Some("K"))).await.unwrap()
            else {
                panic!()
            };
            s.settle_click2call(owner, ClaimOutcome::Failed("busy".into()))
                .await
                .unwrap();
            let Claimed::Own { owner: next } =
                s.claim_click2call(req("1001", Some("K"))).await.unwrap()
            else {
                panic!("a failed attempt is not joined")
            };
            assert_ne!(next, owner);
            let mut short = req("1003", None);
            short.pair_window_ms = 1;
            let first = s.claim_click2call(short.clone()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let second = s.claim_click2call(short).await.unwrap();
            assert!(matches!(first, Claimed::Own { .. }));
            assert!(matches!(second, Claimed::Own { .. }), "window passed");
            assert_ne!(first, second);
            s.close().await;
        })
        .await;
    }

    /// Claims for one pair from many tasks at once (on PostgreSQL, racing transactions of
    /// separate storages: separate replicas) give exactly one owner.
    #[tokio::test]
    async fn racing_claims_have_one_owner() {
        for (_guard, s, url) in crate::storage::test_backends().await {
            let other = Storage::open(&url).await.unwrap();
            let mut tasks = Vec::new();
            for i in 0..20 {
                let s = if i % 2 == 0 { s.clone() } else { other.clone() };
                tasks.push(tokio::spawn(async move {
                    s.claim_click2call(req("2001", None)).await.unwrap()
                }));
            }
            let mut owners = std::collections::HashSet::new();
            let mut own = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Claimed::Own { owner } => {
                        own += 1;
                        owners.insert(owner);
                    }
                    Claimed::Join { owner } => {
                        owners.insert(owner);
                    }
                    Claimed::KeyReused => panic!(),
                }
            }
            assert_eq!(own, 1, "{} backend", s.backend().name());
            assert_eq!(owners.len(), 1);
            other.close().await;
            s.close().await;
        }
    }
}
