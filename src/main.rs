//! Boot only: parse the command line and hand over.
#![forbid(unsafe_code)]

use clap::Parser;
use pushgate::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { pingora } => pushgate::server::run(pingora),
        Command::Check { conf } => pushgate::server::check(&conf),
        Command::Reload { conf } => pushgate::spool_cli::reload(&conf),
        Command::Spool { conf, command } => match conf {
            Some(conf) => pushgate::spool_cli::run(&conf, command),
            None => Err("spool needs -c FILE".into()),
        },
        Command::DevCerts { out } => pushgate::devcerts::write_dev_certs(&out)
            .map(|files| {
                for f in files {
                    println!("{}", out.join(f).display());
                }
            })
            .map_err(|e| e.to_string()),
    };
    if let Err(message) = result {
        eprintln!("pushgate: {message}");
        std::process::exit(1);
    }
}
