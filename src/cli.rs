//! Commands an operator runs against the service's database while it runs or not:
//! `outbox list` and `outbox retry`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{self, Config};
use crate::storage::{OutboxEntry, OutboxState, RetryTarget, Storage};

/// `finaz-freeswitch outbox ...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxCmd {
    List {
        state: OutboxState,
        limit: i64,
        show_url: bool,
    },
    Retry(RetryTarget),
}

impl OutboxCmd {
    /// Parses what follows `outbox`.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let (verb, rest) = args.split_first().ok_or("outbox needs `list` or `retry`")?;
        match verb.as_str() {
            "list" => {
                let mut state = OutboxState::Dead;
                let mut limit = 100;
                let mut show_url = false;
                let mut it = rest.iter();
                while let Some(a) = it.next() {
                    match a.as_str() {
                        "--state" => {
                            let v = it
                                .next()
                                .ok_or("--state needs pending, dead or delivered")?;
                            state = OutboxState::parse(v)
                                .ok_or_else(|| format!("unknown state {v:?}"))?;
                        }
                        "--limit" => {
                            limit = it
                                .next()
                                .and_then(|v| v.parse().ok())
                                .filter(|n| *n > 0)
                                .ok_or("--limit needs a positive number")?;
                        }
                        "--show-url" => show_url = true,
                        other => return Err(format!("unknown outbox list option {other:?}")),
                    }
                }
                Ok(OutboxCmd::List {
                    state,
                    limit,
                    show_url,
                })
            }
            "retry" => match rest {
                [a] if a == "--all-dead" => Ok(OutboxCmd::Retry(RetryTarget::AllDead)),
                [id] => id
                    .parse()
                    .map(|id| OutboxCmd::Retry(RetryTarget::One(id)))
                    .map_err(|_| format!("{id:?} is not an outbox id")),
                _ => Err("outbox retry needs an ID or --all-dead".into()),
            },
            other => Err(format!("unknown outbox command {other:?}")),
        }
    }

    /// Runs against the configured database and prints the result.
    pub async fn run(&self, config: &Config) -> anyhow::Result<()> {
        let storage = Storage::open(&config.storage_url).await.map_err(|e| {
            anyhow::anyhow!(
                "opening storage {}: {e}",
                config::redact_url(&config.storage_url)
            )
        })?;
        match self {
            OutboxCmd::List {
                state,
                limit,
                show_url,
            } => {
                let entries = storage.list_outbox(*state, *limit).await?;
                println!(
                    "{:>8}  {:<36}  {:<9}  {:>8}  {:<29}  last error",
                    "id", "call id", "state", "attempts", "created"
                );
                for e in &entries {
                    print_entry(e, *show_url);
                }
                eprintln!(
                    "{} {} entr{}",
                    entries.len(),
                    state.as_str(),
                    if entries.len() == 1 { "y" } else { "ies" }
                );
            }
            OutboxCmd::Retry(target) => {
                let n = storage
                    .retry_dead(*target, config.finaz.max_retry_age.as_millis() as i64)
                    .await?;
                println!(
                    "{n} dead entr{} queued again; the running service sends them within a second",
                    if n == 1 { "y" } else { "ies" }
                );
                if let (0, RetryTarget::One(id)) = (n, target) {
                    eprintln!("no dead entry with id {id}");
                }
            }
        }
        storage.close().await;
        Ok(())
    }
}

fn print_entry(e: &OutboxEntry, show_url: bool) {
    let created = UNIX_EPOCH + Duration::from_millis(e.created_at.max(0) as u64);
    println!(
        "{:>8}  {:<36}  {:<9}  {:>8}  {:<29}  {}",
        e.id,
        e.call_id,
        e.state.as_str(),
        e.attempts,
        httpdate::fmt_http_date(created.min(SystemTime::now() + Duration::from_secs(86_400))),
        e.last_error.as_deref().unwrap_or("-")
    );
    if show_url {
        println!("          {}", e.url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_list_and_retry() {
        assert_eq!(
            OutboxCmd::parse(&args("list --state pending --limit 5 --show-url")).unwrap(),
            OutboxCmd::List {
                state: OutboxState::Pending,
                limit: 5,
                show_url: true
            }
        );
        assert_eq!(
            OutboxCmd::parse(&args("retry 42")).unwrap(),
            OutboxCmd::Retry(RetryTarget::One(42))
        );
        assert_eq!(
            OutboxCmd::parse(&args("retry --all-dead")).unwrap(),
            OutboxCmd::Retry(RetryTarget::AllDead)
        );
        for bad in ["", "list --state nope", "retry", "retry x", "purge"] {
            assert!(OutboxCmd::parse(&args(bad)).is_err(), "{bad}");
        }
    }
}
