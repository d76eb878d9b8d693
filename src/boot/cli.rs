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
        #[arg(short, long, global = true)]
        conf: Option<PathBuf>,
        #[command(subcommand)]
        command: crate::ops::spool_cli::SpoolCommand,
    },
    /// Make a development PKI: a CA, a localhost server certificate, and client certificates.
    DevCerts {
        #[arg(long, default_value = "dev/certs")]
        out: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn spool_takes_its_config_before_or_after_the_action() {
        for args in [
            ["pushgate", "spool", "-c", "x.yaml", "stats"],
            ["pushgate", "spool", "stats", "-c", "x.yaml"],
        ] {
            let Command::Spool { conf, .. } = Cli::try_parse_from(args).unwrap().command else {
                panic!()
            };
            assert_eq!(conf.unwrap(), PathBuf::from("x.yaml"));
        }
    }
}
