use std::process::ExitCode;

use clap::Parser;
use httpd::cli::{Cli, Command, CtlCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Ctl { control, json, cmd }) = &cli.command {
        let line = match cmd {
            CtlCommand::Status if *json => "status json",
            CtlCommand::Status => "status",
            CtlCommand::Rotate => "rotate",
            CtlCommand::Reopen => "reopen",
            CtlCommand::Reload => "reload",
        };
        return match httpd::control::client(control, line) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("httpd ctl: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.args.log_level)),
        )
        .init();
    match httpd::server::run(cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
