//! The command line: `run`, `check`, `reload`, `spool`, `dev-certs`; `run` takes Pingora's
//! flags (`-d`, `-u`, `-t`), described here for pushgate.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Start serving.
    Run(RunArgs),
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

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The config file.
    #[arg(short, long, value_name = "FILE")]
    pub conf: PathBuf,
    /// Run in the background; its log lines go to server.error_log or log.file, one of which
    /// must be set.
    #[arg(short, long)]
    pub daemon: bool,
    /// Graceful upgrade: take the listening sockets over from the pushgate running with the same
    /// config, then send that one SIGQUIT (docs/operations.md).
    #[arg(short, long)]
    pub upgrade: bool,
    /// Load and check the config, then exit (before an upgrade).
    #[arg(short, long)]
    pub test: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Regression (issue: `run --help` described `-u` with Pingora's generic text).
    #[test]
    fn run_describes_its_flags_for_pushgate() {
        let mut cli = Cli::command();
        let help = cli.find_subcommand_mut("run").unwrap().render_long_help().to_string();
        assert!(
            help.contains("take the listening sockets over from the pushgate"),
            "{help}"
        );
        assert!(help.contains("server.error_log or log.file"), "{help}");
        assert!(!help.to_lowercase().contains("pingora"), "{help}");
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
