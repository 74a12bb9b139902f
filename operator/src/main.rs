//! Owns the `ha-operator` command line: `run` (default), `render -f FILE`, `crd`.
//! Must not hold logic of its own: each subcommand calls into the library.
//! See `ha_operator::render` and `ha_operator::crd`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use ha_operator::crd::HaCluster;

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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Crd => {
            print!(
                "{}",
                serde_yaml::to_string(&HaCluster::crd()).context("serialize CRD")?
            );
            Ok(())
        }
        Command::Render { file, namespace } => {
            let _ = (file, namespace);
            anyhow::bail!("render is not implemented yet")
        }
        Command::Run => anyhow::bail!("run is not implemented yet"),
    }
}
