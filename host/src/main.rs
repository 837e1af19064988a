//! The `logpipe-host` binary: parse the command line, set up logging and
//! signal handling, and hand over to a subcommand.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use logpipe_host::cli::{Command, ConfigCommand, HandlersCommand, OffsetsCommand, StoreCommand};
use logpipe_host::commands;
use logpipe_host::config::{self, CommandLineError};
use logpipe_host::logging::LogFormat;

fn main() -> ExitCode {
    let config::ParsedCli { cli, context } =
        match config::parse_command_line(std::env::args_os().collect()) {
            Ok(parsed) => parsed,
            // clap prints help, version and usage errors itself.
            Err(CommandLineError::Clap(error)) => error.exit(),
            Err(CommandLineError::Config(error)) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        };
    logpipe_host::logging::init(&cli.log, cli.log_format);
    let json_logs = cli.log_format == LogFormat::Json;
    let shutdown = watch_signals();
    let result = match cli.command {
        Command::Run(args) => commands::run::run_command(args, &context, &shutdown),
        Command::Produce(args) => commands::produce::produce(args),
        Command::Dev(args) => commands::dev::dev(args, &shutdown),
        Command::Handlers(HandlersCommand::List(args)) => commands::handlers::list(args),
        Command::Store(StoreCommand::Get(args)) => commands::store::get(args),
        Command::Store(StoreCommand::Scan(args)) => commands::store::scan(args),
        Command::Store(StoreCommand::Export(args)) => commands::store::export(args),
        Command::Config(ConfigCommand::Check(args)) => commands::config::check(&args, &context),
        Command::Config(ConfigCommand::Keys) => commands::config::keys(),
        Command::Bench(args) => commands::bench::bench(args, &shutdown),
        Command::Offsets(command) => match command {
            OffsetsCommand::List(args) => commands::offsets::list(args),
            OffsetsCommand::Set(args) => commands::offsets::set(args),
            OffsetsCommand::Reset(args) => commands::offsets::reset(args),
            OffsetsCommand::Export(args) => commands::offsets::export(args),
            OffsetsCommand::Import(args) => commands::offsets::import(args),
        },
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            // JSON logs stay one object per line: the error is in the log.
            if !json_logs {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The first SIGINT/SIGTERM asks the running command to finish in-flight
/// work and commit; a second one exits at once (offsets stay at the last
/// commit, so nothing is lost, only re-handled).
fn watch_signals() -> Arc<AtomicBool> {
    let requested = Arc::new(AtomicBool::new(false));
    let flag = requested.clone();
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return tracing::warn!("no signal handling: {e}"),
            };
            runtime.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return tracing::warn!("no signal handling: cannot install handlers");
                };
                loop {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    if flag.swap(true, Ordering::SeqCst) {
                        eprintln!("second signal: exiting now; offsets stay at the last commit");
                        std::process::exit(130);
                    }
                    tracing::info!(
                        "signal received: finishing in-flight records (signal again to exit now)"
                    );
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("no signal handling: {e}");
    }
    requested
}
