use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use httpd::cli::{Cli, Command, CtlCommand};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return match httpd::config::load(file) {
            Ok(f) => {
                httpd::config::apply(&mut cli.args, &f, &matches);
                print!("{}", httpd::config::render(&cli.args, &f));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("httpd check-config: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(path) = cli.args.config.clone() {
        match httpd::config::load(&path) {
            Ok(f) => httpd::config::apply(&mut cli.args, &f, &matches),
            Err(e) => {
                eprintln!("httpd: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(Command::Ctl { control, json, cmd }) = &cli.command {
        let line = match cmd {
            CtlCommand::Status if *json => "status json".to_string(),
            CtlCommand::Status => "status".into(),
            CtlCommand::Rotate => "rotate".into(),
            CtlCommand::Reopen => "reopen".into(),
            CtlCommand::Reload => "reload".into(),
            CtlCommand::Top { .. } => "top".into(),
            CtlCommand::Failpoint { name, actions } => format!("failpoint {name} {actions}"),
        };
        let Some(control) = control else {
            eprintln!("httpd ctl: --control PATH is required (the socket of httpd --control)");
            return ExitCode::from(2);
        };
        let result = match cmd {
            CtlCommand::Top { frames } => httpd::top::client(control, *frames),
            _ => httpd::control::client(control, &line),
        };
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("httpd ctl: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // A stderr nobody reads any more (the pipe's reader gone) must cost log lines, not
        // threads: tracing-subscriber reports a failed write with eprintln!, which panics on
        // EPIPE, and the thread that logged died (the signal thread first: SIGTERM was then
        // ignored).
        .log_internal_errors(false)
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
