//! Owns the `ha-operator` command line: `run` (default), `render -f FILE`, `crd`.
//! Must not hold logic of its own: each subcommand calls into the library.
//! `run` is narrated step by step below: logs, client, CRD check, probes up, leadership, controller.
//! See `ha_operator::controller`, `ha_operator::lease`, `ha_operator::render`, `ha_operator::crd`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::{ArgAction, Args, Parser, Subcommand};
use kube::CustomResourceExt;
use tokio_util::sync::CancellationToken;

use ha_operator::controller::{self, Context};
use ha_operator::crd::HaCluster;
use ha_operator::lease::{Elector, LeaseConfig};
use ha_operator::metrics::Metrics;
use ha_operator::render::Credentials;
use ha_operator::telemetry::{self, LogFormat};
use ha_operator::web::{self, WebState};

#[derive(Parser, Debug)]
#[command(
    name = "ha-operator",
    version,
    about = "Kubernetes operator for ha clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller (the default)
    Run(RunArgs),
    /// Print every object the operator would create for an HaCluster file
    Render {
        /// HaCluster YAML file ("-" for stdin)
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Namespace of the objects [default: the file's metadata.namespace, else "default"]
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Print the HaCluster CustomResourceDefinition
    Crd,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Address of /metrics, /healthz and /readyz
    #[arg(long, env = "HA_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Watch HaClusters in this namespace only [default: all namespaces]
    #[arg(long, env = "HA_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Let one replica of several be active, through a coordination.k8s.io Lease
    #[arg(long, env = "HA_OPERATOR_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader-election Lease
    #[arg(long, env = "HA_OPERATOR_LEASE_NAME", default_value = "ha-operator")]
    lease_name: String,
    /// Namespace of the Lease [default: POD_NAMESPACE, else --namespace, else "default"]
    #[arg(long, env = "HA_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's name in the Lease and in Events [default: POD_NAME, else HOSTNAME]
    #[arg(long, env = "HA_OPERATOR_IDENTITY")]
    identity: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or per target (ha_operator=debug,kube=info);
    /// RUST_LOG wins when set
    #[arg(long, env = "HA_OPERATOR_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format: text or json
    #[arg(long, env = "HA_OPERATOR_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    // `ha-operator` and `ha-operator --flag …` mean `ha-operator run …`.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let first = argv.get(1).and_then(|a| a.to_str()).map(str::to_string);
    let implicit_run = match first.as_deref() {
        None => true,
        Some("-h" | "--help" | "-V" | "--version") => false,
        Some(a) => a.starts_with('-'),
    };
    if implicit_run {
        argv.insert(1.min(argv.len()), "run".into());
    }
    let cli = Cli::parse_from(argv);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain, no backtrace: the message is for users.
            eprintln!("ha-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crd => {
            print!(
                "{}",
                serde_yaml::to_string(&HaCluster::crd()).context("serialize CRD")?
            );
            Ok(())
        }
        Command::Render { file, namespace } => render(&file, namespace),
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("start the tokio runtime")?
            .block_on(run(args)),
    }
}

/// `ha-operator render`: the objects for one HaCluster file, as a YAML stream on stdout.
fn render(file: &Path, namespace: Option<String>) -> anyhow::Result<()> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("read stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?
    };
    let cluster = ha_operator::manifest::parse_cluster(&text)
        .with_context(|| format!("{}", file.display()))?;
    let namespace = namespace
        .or_else(|| cluster.metadata.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let credentials = Credentials::generate()?;
    let rendered = ha_operator::render::render(&cluster, &namespace, &credentials)
        .with_context(|| format!("{}", file.display()))?;
    print!("{}", ha_operator::render::to_yaml_stream(&rendered)?);
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // 1. Logs first, so every later step can explain itself.
    telemetry::init(&args.log_level, args.log_format).map_err(anyhow::Error::msg)?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("ha-operator-{}", std::process::id()));

    // 2. One shutdown signal for everything: SIGTERM (Kubernetes) or Ctrl-C.
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));

    // 3. Probes and metrics come up before anything slow, so Kubernetes sees a live process.
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("bind --metrics-addr {}", args.metrics_addr))?;
    let web = tokio::spawn(web::serve(
        listener,
        WebState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        shutdown.clone().cancelled_owned(),
    ));

    // 4. The API server and the CRD: fail fast with an install hint.
    let client = kube::Client::try_default()
        .await
        .context("connect to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    controller::check_crd(&client, args.namespace.as_deref())
        .await
        .map_err(anyhow::Error::msg)?;
    ready.store(true, Ordering::Release);
    tracing::info!(%identity, namespace = args.namespace.as_deref().unwrap_or("(all)"), "ha-operator starting");

    // 5. Leadership: wait until this replica holds the Lease; losing it later ends the process
    //    (Kubernetes restarts it as a standby), so two replicas never reconcile at once.
    let (leading_tx, mut leading) = tokio::sync::watch::channel(!args.leader_election);
    let election = if args.leader_election {
        let lease_ns = args
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let cfg = LeaseConfig::new(&args.lease_name, &lease_ns, &identity);
        tracing::info!(lease = %args.lease_name, namespace = %lease_ns, "waiting for leadership");
        Some(tokio::spawn(
            Elector::new(client.clone(), cfg).run(leading_tx, shutdown.clone()),
        ))
    } else {
        drop(leading_tx);
        None
    };
    tokio::select! {
        _ = shutdown.cancelled() => {
            return finish(web, election).await;
        }
        r = leading.wait_for(|l| *l) => {
            if r.is_err() && args.leader_election {
                anyhow::bail!("leader election stopped before this replica led");
            }
        }
    }
    metrics.leader.set(1);
    tracing::info!(%identity, "leading: starting the controller");

    // 6. The controller, until shutdown or lost leadership.
    // Every write of a reconcile checks the Lease first: one running when it is lost stops
    // before its next write (and says so), instead of finishing alongside the new leader.
    let ctx =
        Arc::new(Context::new(client, metrics.clone(), &identity).follow_lease(leading.clone()));
    let stop = shutdown.clone();
    let mut lost = leading.clone();
    let elected = args.leader_election;
    let stopping = async move {
        if elected {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = lost.wait_for(|l| !*l) => {}
            }
        } else {
            stop.cancelled().await;
        }
    };
    controller::run(ctx, args.namespace.clone(), stopping).await;
    metrics.leader.set(0);
    let lost_leadership = args.leader_election && !*leading.borrow() && !shutdown.is_cancelled();
    shutdown.cancel();
    finish(web, election).await?;
    if lost_leadership {
        anyhow::bail!("lost the leader lease; exiting so that this replica restarts as a standby");
    }
    tracing::info!("ha-operator stopped");
    Ok(())
}

async fn finish(
    web: tokio::task::JoinHandle<std::io::Result<()>>,
    election: Option<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    if let Some(e) = election {
        e.await.context("leader election task")?;
    }
    web.await
        .context("metrics endpoint task")?
        .context("metrics endpoint")
}

async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
