//! The command line (clap): the service, `check-config`, `doctor`, `sandbox`, and the
//! commands an operator runs against the service's database while it runs or not
//! (`outbox list`, `outbox retry`). Flags go in any order; every command has `--help`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

use crate::config::{self, Config};
use crate::storage::{OutboxEntry, OutboxState, RetryTarget, Storage};

/// Makes FreeSWITCH speak Finaz's Telefonia Genérica contract (click2call, recordings,
/// dialer webhook). Without a command it runs the service.
#[derive(Debug, Parser)]
#[command(
    name = "finaz-freeswitch",
    version,
    after_help = "Settings come from the compiled-in defaults, then FILE, then FINAZ_<SECTION>__<KEY> environment variables."
)]
pub struct Args {
    /// The configuration file (TOML); only the keys you change.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Cmd {
    /// Validate the configuration and print the effective one, secrets redacted.
    CheckConfig,
    /// Check FreeSWITCH, storage, recordings, Finaz and the ports, a line each with its fix.
    Doctor {
        /// An operator extension to try freeswitch.operator_endpoint with.
        #[arg(long, value_name = "EXTENSION")]
        ramal: Option<String>,
    },
    /// Run the real service against a simulated FreeSWITCH.
    Sandbox,
    /// Webhooks to Finaz in the database.
    #[command(subcommand)]
    Outbox(OutboxCmd),
}

/// `finaz-freeswitch outbox ...`
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum OutboxCmd {
    /// List webhooks (by default the dead ones).
    List {
        /// pending, dead or delivered.
        #[arg(long, default_value = "dead", value_parser = parse_state)]
        state: OutboxState,
        /// At most this many, newest first.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
        limit: i64,
        /// Show each webhook's URL (it holds the customer's number).
        #[arg(long)]
        show_url: bool,
    },
    /// Send dead webhooks again.
    Retry {
        /// The outbox id (see `outbox list`).
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<i64>,
        /// Every dead webhook.
        #[arg(long)]
        all_dead: bool,
    },
}

fn parse_state(v: &str) -> Result<OutboxState, String> {
    OutboxState::parse(v).ok_or_else(|| format!("unknown state {v:?}: pending, dead or delivered"))
}

impl OutboxCmd {
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
            OutboxCmd::Retry { id, .. } => {
                let target = match id {
                    Some(id) => RetryTarget::One(*id),
                    None => RetryTarget::AllDead,
                };
                let n = storage
                    .retry_dead(target, config.finaz.max_retry_age.as_millis() as i64)
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

    fn parse(s: &str) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("finaz-freeswitch").chain(s.split_whitespace()))
    }

    #[test]
    fn flags_go_in_any_order_and_every_command_has_help() {
        let a = parse("--config f.toml doctor --ramal 1001").unwrap();
        let b = parse("doctor --ramal 1001 --config f.toml").unwrap();
        let c = parse("doctor -c f.toml --ramal 1001").unwrap();
        for x in [&a, &b, &c] {
            assert_eq!(x.config.as_deref(), Some(std::path::Path::new("f.toml")));
            assert_eq!(
                x.command,
                Some(Cmd::Doctor {
                    ramal: Some("1001".into())
                })
            );
        }
        assert_eq!(
            parse("").unwrap().command,
            None,
            "no command runs the service"
        );
        for cmd in [
            "",
            "check-config",
            "doctor",
            "sandbox",
            "outbox",
            "outbox list",
            "outbox retry",
        ] {
            let e = parse(&format!("{cmd} --help")).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{cmd}");
        }
        assert!(parse("--ramal 1001").is_err(), "--ramal goes with doctor");
    }

    #[test]
    fn parses_list_and_retry() {
        assert_eq!(
            parse("outbox list --state pending --limit 5 --show-url")
                .unwrap()
                .command,
            Some(Cmd::Outbox(OutboxCmd::List {
                state: OutboxState::Pending,
                limit: 5,
                show_url: true
            }))
        );
        assert_eq!(
            parse("outbox retry 42").unwrap().command,
            Some(Cmd::Outbox(OutboxCmd::Retry {
                id: Some(42),
                all_dead: false
            }))
        );
        assert!(matches!(
            parse("outbox retry --all-dead").unwrap().command,
            Some(Cmd::Outbox(OutboxCmd::Retry {
                id: None,
                all_dead: true
            }))
        ));
        for bad in [
            "outbox",
            "outbox list --state nope",
            "outbox list --limit 0",
            "outbox retry",
            "outbox retry x",
            "outbox retry 4 --all-dead",
            "outbox purge",
            "bogus",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
