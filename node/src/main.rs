//! The `chorus` binary: parses the command line and runs a subcommand. Errors reach the
//! user here, typed below and printed once; exit codes: 0 success, 1 failure,
//! 64 invalid configuration or usage.

use std::process::ExitCode;

use chorus_node::config::NodeConfig;
use chorus_node::tools::cli::{Cli, Command};
use chorus_node::tools::commands;
use chorus_node::{agent, logging};
use clap::Parser;

/// mimalloc rather than the system allocator: the store's index (sled) allocates and
/// frees per key it writes, and glibc's malloc took a quarter of its CPU (BENCHMARKS.md,
/// "The store of record").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `EX_USAGE` from sysexits.h: the configuration or the command line is wrong.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Agent(args) => {
            let mut config = match NodeConfig::load(args.config.as_deref(), std::env::vars()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            // A key file others can read is a configuration error: refused (exit 64)
            // before anything is created or bound, naming the file and the fix.
            if let Err(e) = chorus_node::secrets::check_key_files(&config) {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            if let Some(format) = args.log_format {
                config.log.format = format;
            }
            let log = logging::init(config.log.format, &config.log.level);
            let source = chorus_node::reload::ConfigSource {
                file: args.config.clone(),
                log_format: args.log_format,
            };
            match runtime.block_on(agent::run(config, source, log)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "agent failed");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        other => {
            logging::init(Default::default(), "warn");
            runtime.block_on(commands::run(other))
        }
    }
}
