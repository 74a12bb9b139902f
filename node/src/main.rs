//! The `ha` binary: read the configuration, set up logging, run the node until a signal.

use std::process::ExitCode;

use ha::config::{Command, ConfigError};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if ha::check::wanted(&argv) {
        return ha::check::main(argv);
    }
    if ha::probe::wanted(&argv) {
        return ha::probe::main(argv);
    }
    if ha::backup::cli::wanted(&argv) {
        return ha::backup::cli::main(argv);
    }
    let config = match Command::parse(argv) {
        Ok(Command::Run(c)) => c,
        Ok(Command::Version) => {
            print!("{}", ha::version_text());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Check(c)) => {
            if let Err(e) = ha::node::preflight(&c, Default::default()) {
                eprintln!("ha: {e}");
                return ExitCode::from(2);
            }
            print!("{}", c.effective_settings());
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("ha: {e}");
            return ExitCode::from(2);
        }
    };
    ha::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ha: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(*config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ha: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ha::config::Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    // The banner names the user; the password is never printed.
    let pg_user = config.pg.user.clone();
    let node = ha::node::start(config, shutdown.clone()).await?;
    // One line that says where everything listens (scripts and tests read it).
    let addr = node.http_addr;
    let mut ready = format!("ha is ready: http_addr={addr}");
    if let Some(pg) = node.pg_addr {
        ready.push_str(&format!(" pg_addr={pg}"));
    }
    println!("{ready}");
    println!(
        "  try: curl -s -d '{{\"sql\":\"SELECT 1\"}}' http://127.0.0.1:{}/",
        addr.port()
    );
    if let Some(pg) = node.pg_addr {
        println!(
            "       psql \"postgres://{pg_user}@127.0.0.1:{}/ha\" -c 'SELECT 1'   (password: --pg-pass)",
            pg.port()
        );
    }
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    node.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the node can still be stopped with SIGKILL; wait forever.
        return futures::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
