//! The command line: `run`, `check`, `dev-certs` (and `spool`), with Pingora's own flags
//! (`-d`, `-u`, `-t`) accepted by `run`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "pushgate",
    version,
    about = "mTLS ingress for payment-network push notifications"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start serving (-c FILE; Pingora's -d daemon, -u upgrade, -t test flags accepted).
    Run {
        #[command(flatten)]
        pingora: pingora::server::configuration::Opt,
    },
    /// Load and validate the config, keys and certificates; print the routes.
    Check {
        #[arg(short, long)]
        conf: PathBuf,
    },
    /// Ask the running pushgate to reload its config (validated here first).
    Reload {
        #[arg(short, long)]
        conf: PathBuf,
    },
    /// Inspect and operate the embedded queue.
    Spool {
        #[arg(short, long)]
        conf: PathBuf,
        #[command(subcommand)]
        command: crate::spool_cli::SpoolCommand,
    },
    /// Make a development PKI: a CA, a localhost server certificate, and client certificates.
    DevCerts {
        #[arg(long, default_value = "dev/certs")]
        out: PathBuf,
    },
}
