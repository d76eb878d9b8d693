//! Boot only: parse the command line and hand over.
#![forbid(unsafe_code)]

use clap::Parser;
use pushgate::boot::cli::{Cli, Command};

/// mimalloc rather than glibc's malloc: under the keep-alive benchmark glibc's allocator
/// (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`, `_int_free`) was ~14% of pushgate's CPU
/// (bench/profile.sh, 2026-12-02): request buffers, TLS records and bodies of a few KB, freed on
/// other threads than they were allocated on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => pushgate::boot::server::run(args),
        Command::Check { conf } => pushgate::boot::server::check(&conf),
        Command::Reload { conf } => pushgate::ops::spool_cli::reload(&conf),
        Command::Spool { conf, command } => match conf {
            Some(conf) => pushgate::ops::spool_cli::run(&conf, command),
            None => Err("spool needs -c FILE".into()),
        },
        Command::DevCerts { out } => pushgate::boot::devcerts::write_dev_certs(&out)
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
