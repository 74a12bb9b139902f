//! Owns the `ha-operator` command line: `run` (default), `render -f FILE`, `crd`.
//! Must not hold logic of its own: each subcommand calls into the library.
//! See `ha_operator::render` and `ha_operator::crd`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use ha_operator::crd::HaCluster;
use ha_operator::render::Credentials;

#[derive(Parser, Debug)]
#[command(
    name = "ha-operator",
    version,
    about = "Kubernetes operator for ha clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller (the default)
    Run,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match cli.command.unwrap_or(Command::Run) {
        Command::Crd => {
            print!(
                "{}",
                serde_yaml::to_string(&HaCluster::crd()).context("serialize CRD")?
            );
            Ok(())
        }
        Command::Render { file, namespace } => render(&file, namespace),
        Command::Run => anyhow::bail!("run is not implemented yet"),
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
