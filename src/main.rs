//! The `finaz-freeswitch` binary: parses the command line and runs the service or a command.

use std::process::ExitCode;

use clap::Parser;
use finaz_freeswitch::cli::{self, Cmd};
use finaz_freeswitch::{app, config, doctor, logging, sandbox};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // Every TLS connection of the process (webhooks, doctor, the HTTPS listener) uses ring.
    app::install_tls_provider();
    // Usage errors exit 2 with the usage; --help and --version exit 0.
    let args = cli::Args::parse();
    let (cmd, file) = (args.command, args.config);
    let (raw, mut config) = match config::load(file.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Some(Cmd::CheckConfig) = cmd {
        print!("{}", raw.redacted_toml());
        eprintln!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    if let Some(Cmd::Outbox(outbox)) = &cmd {
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(Cmd::Doctor { ramal }) = &cmd {
        let checks = runtime.block_on(doctor::run(&config, ramal.as_deref()));
        for c in &checks {
            println!("{}", c.line());
        }
        let failed = checks.iter().filter(|c| c.failed()).count();
        if failed > 0 {
            println!("{failed} check(s) failed");
            return ExitCode::from(1);
        }
        println!("all checks passed");
        return ExitCode::SUCCESS;
    }
    let sandbox = matches!(cmd, Some(Cmd::Sandbox));
    logging::init(&config.log, sandbox);
    raise_descriptor_limit();
    let options = if sandbox {
        match runtime.block_on(prepare_sandbox(&mut config)) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(1);
            }
        }
    } else {
        app::Options::default()
    };
    match runtime.block_on(run(config, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "service failed");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Points the configuration at a simulated FreeSWITCH, a sandbox database and a writable
/// recordings directory.
async fn prepare_sandbox(config: &mut config::Config) -> anyhow::Result<app::Options> {
    if config.storage_url == "sqlite://finaz-freeswitch.db" {
        config.storage_url = "sqlite://finaz-freeswitch-sandbox.db".into();
    }
    let writable =
        |d: &std::path::Path| std::fs::create_dir_all(d).is_ok() && tempfile_in(d).is_ok();
    // Never write tones into a real FreeSWITCH's recordings (the default directory).
    let default_dir = std::path::Path::new("/var/lib/freeswitch/recordings");
    if config.recordings.dir() == default_dir || !writable(config.recordings.dir()) {
        let fallback = std::env::temp_dir().join("finaz-freeswitch-sandbox/recordings");
        std::fs::create_dir_all(&fallback)?;
        tracing::warn!(
            configured = %config.recordings.dir().display(),
            using = %fallback.display(),
            "the sandbox records outside recordings.dir (it is FreeSWITCH's default, or not writable)"
        );
        config.set_recordings_dir(fallback)?;
    }
    if config
        .finaz
        .answered_url
        .as_str()
        .starts_with("https://api.finaz.com.br/")
    {
        tracing::warn!(
            "SANDBOX: finaz.answered_url is Finaz's production URL: sandbox dialer calls will reach it; point it at Finaz's homologation endpoint or a local test server"
        );
    }
    let sim = sandbox::Simulator::start(
        config.nodes[0].password.expose(),
        config.recordings.layout.clone(),
    )
    .await?;
    config.set_single_node(sim.addr().to_string());
    tracing::warn!(
        freeswitch = %sim.addr(),
        storage = %config.storage_url,
        recordings = %config.recordings.dir().display(),
        "SANDBOX: FreeSWITCH is simulated; calls, recordings and dialer calls are not real"
    );
    Ok(app::Options { sandbox: Some(sim) })
}

/// Creates and removes a file in `dir`.
fn tempfile_in(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".finaz-sandbox-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)
}

/// Every connection is a descriptor: systemd's default soft limit (1024) would let ~1,000 idle
/// connections starve Finaz's next request. The soft limit goes up to the hard one.
fn raise_descriptor_limit() {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) => tracing::info!(
            before = before.unwrap_or(0),
            now,
            "open file limit (RLIMIT_NOFILE soft) raised to the hard limit"
        ),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
}

async fn run(config: config::Config, options: app::Options) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let service = app::Service::start_with(config, options, shutdown.clone()).await?;
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
