//! The `finaz-freeswitch` binary: parses the command line and runs the service or a command.

use std::path::PathBuf;
use std::process::ExitCode;

use finaz_freeswitch::cli::OutboxCmd;
use finaz_freeswitch::{app, config, logging};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage:
  finaz-freeswitch [--config FILE]                 run the service
  finaz-freeswitch check-config [--config FILE]    validate and print the effective config
  finaz-freeswitch outbox list [--state dead|pending|delivered] [--limit N] [--show-url] [--config FILE]
                                                   webhooks to Finaz (default: the dead ones)
  finaz-freeswitch outbox retry ID|--all-dead [--config FILE]
                                                   send dead webhooks again
  finaz-freeswitch --version | --help

Settings come from the compiled-in defaults, then FILE, then FINAZ_<SECTION>__<KEY>
environment variables.";

enum Cmd {
    Run,
    CheckConfig,
    Outbox(OutboxCmd),
}

fn parse_args() -> Result<(Cmd, Option<PathBuf>), String> {
    let mut cmd = Cmd::Run;
    let mut file = None;
    let mut args = std::env::args().skip(1);
    let mut outbox_args: Option<Vec<String>> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" if outbox_args.is_some() => {
                file = Some(PathBuf::from(args.next().ok_or("--config needs a FILE")?))
            }
            _ if outbox_args.is_some() => outbox_args.as_mut().expect("some").push(a),
            "check-config" => cmd = Cmd::CheckConfig,
            "outbox" => outbox_args = Some(Vec::new()),
            "--config" | "-c" => {
                file = Some(PathBuf::from(args.next().ok_or("--config needs a FILE")?))
            }
            s if s.starts_with("--config=") => file = Some(PathBuf::from(&s[9..])),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--version" | "-V" => {
                println!("finaz-freeswitch {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if let Some(a) = outbox_args {
        cmd = Cmd::Outbox(OutboxCmd::parse(&a)?);
    }
    Ok((cmd, file))
}

fn main() -> ExitCode {
    let (cmd, file) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (raw, config) = match config::load(file.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Cmd::CheckConfig = cmd {
        print!("{}", raw.redacted_toml());
        eprintln!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    if let Cmd::Outbox(outbox) = &cmd {
        let result = tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(outbox.run(&config)));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    logging::init(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "service failed");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(config: config::Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let service = app::Service::start(config, shutdown.clone()).await?;
    wait_for_signal().await?;
    tracing::info!("shutdown requested");
    service.stop().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}
