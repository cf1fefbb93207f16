//! The `airlock` binary: parse the command line, set up logging, run, and turn
//! the outcome into one of the documented exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use airlock::FailureClass;
use airlock::cli::{Cli, Command, CommandError, LogFormat};
use airlock::config::DaemonConfig;

/// Default log filter for the one-shot commands: warnings only, so the
/// result is what a person reads.
const CLI_LOG_FILTER: &str = "warn";

/// How long blocking work may hold up the exit once the command is done.
const RUNTIME_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(FailureClass::Config.exit_code())
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let Cli {
        log_format,
        log,
        command,
    } = cli;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(FailureClass::Transport.exit_code());
        }
    };
    let outcome = match command {
        Command::Watch(args) => match DaemonConfig::load(args.config.as_deref(), &args) {
            Ok(config) => {
                init_logging(
                    log_format.unwrap_or(config.log.format),
                    log.as_deref().unwrap_or(&config.log.level),
                );
                runtime.block_on(airlock::cli::run_watch(&config))
            }
            Err(e) => Err(CommandError {
                class: e.class(),
                message: airlock::report::error_chain(&e),
            }),
        },
        command => {
            init_logging(
                log_format.unwrap_or(LogFormat::Text),
                log.as_deref()
                    .or(std::env::var("RUST_LOG").ok().as_deref())
                    .unwrap_or(CLI_LOG_FILTER),
            );
            runtime.block_on(airlock::cli::run(command))
        }
    };
    // Reads of a bundle on blocking threads stop at their next chunk once an
    // import is abandoned; one stuck in the kernel (a hung network file
    // system) must still not keep a stopping process alive.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.class.exit_code())
        }
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
