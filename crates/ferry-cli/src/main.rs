//! `ferry`: the command-line interface to ferry.
//!
//! Every failure prints one line, `ferry: <message>`, to stderr and exits with a code that
//! says what kind of failure it was (see `ferry --help`).
#![forbid(unsafe_code)]

mod account;
mod admin;
mod backend;
mod cli;
mod credential;
mod demo;
mod docs;
mod exit;
mod file_meta;
mod folders;
mod hash_cache;
mod http;
mod http_sink;
mod mesh;
mod output;
mod paths;
mod profiles;
mod progress;
mod retry;
mod serve;
mod sync;
mod transfer;
mod users;
mod watch;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::cli::{Cli, Command, Via};
use crate::exit::Failure;

fn main() -> ExitCode {
    // Even a bug gets one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "ferry: internal error: {}",
            exit::one_line(&info.to_string())
        );
    }));
    let started = Instant::now();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return exit::usage(&e),
    };
    output::set_mode(output::Mode {
        quiet: cli.global.quiet,
        verbose: cli.global.verbose,
        json: cli.global.json,
    });
    let result = run(cli);
    output::detail!("finished in {} ms", started.elapsed().as_millis());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`ferry get x | head`): stop quietly, with the
        // status a process killed by SIGPIPE would have.
        Err(e) if exit::is_broken_pipe(&e) => ExitCode::from(141),
        Err(e) => exit::report(&e),
    }
}

/// Whether a command has a JSON form of its result (the others refuse `--json`).
fn has_json(command: &Command) -> bool {
    use cli::{SessionCommand, UserCommand};
    matches!(
        command,
        Command::Init(_)
            | Command::Put(_)
            | Command::Get(_)
            | Command::Sync(_)
            | Command::Ls(_)
            | Command::Stat(_)
            | Command::Rm(_)
            | Command::Watch(_)
            | Command::Login(_)
            | Command::Client(_)
            | Command::User(UserCommand::List(_) | UserCommand::Remove(_))
            | Command::Session(SessionCommand::List(_) | SessionCommand::Revoke(_))
    )
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.global.json && !has_json(&cli.command) {
        anyhow::bail!(exit::bad_input(
            "--json: this command has no JSON output (see \"JSON output\" in ferry --help)"
        ));
    }
    match &cli.command {
        Command::Serve(cli::ServeArgs { report, .. })
        | Command::Mesh(cli::MeshCommand::Up(cli::MeshUpArgs { report, .. })) => {
            // --quiet: warnings and errors only; --verbose: ferry's debug lines too.
            let level = if cli.global.quiet {
                "warn"
            } else if cli.global.verbose {
                "info,ferry=debug"
            } else {
                "info"
            };
            serve::init_logging(level, report.log_format)
        }
        // Other commands log only when asked to.
        _ if std::env::var_os("FERRY_LOG").is_some() => {
            serve::init_logging("warn", cli::LogFormat::Text)
        }
        _ => {}
    }
    match cli.command {
        Command::Init(a) => admin::init(&a),
        Command::Client(c) => block_on(admin::client(&c)),
        Command::Serve(a) => block_on(serve::serve(&a)),
        Command::Put(a) if a.via.via == Via::Http => block_on(interruptible(http::put(&a))),
        Command::Get(a) if a.via.via == Via::Http => {
            block_on_one_thread(interruptible(http::get(&a)))
        }
        Command::Ls(a) if a.via.via == Via::Http => block_on(http::ls(&a)),
        Command::Stat(a) if a.via.via == Via::Http => block_on(http::stat(&a)),
        Command::Rm(a) if a.via.via == Via::Http => block_on(http::rm(&a)),
        Command::Watch(a) if a.via.via == Via::Http => block_on(http::watch(&a)),
        Command::Put(a) => block_on(interruptible(transfer::put(&a))),
        Command::Get(a) => block_on(interruptible(transfer::get(&a))),
        Command::Sync(a) => block_on(interruptible(sync::sync(&a))),
        Command::Ls(a) => block_on(transfer::ls(&a)),
        Command::Stat(a) => block_on(transfer::stat(&a)),
        Command::Rm(a) => block_on(transfer::rm(&a)),
        Command::Watch(a) => block_on(watch::watch(&a)),
        Command::User(c) => block_on(users::user(&c)),
        Command::Session(c) => block_on(users::session(&c)),
        Command::Register(a) => block_on(account::register(&a)),
        Command::Login(a) => block_on(account::login(&a)),
        Command::Logout => block_on(account::logout()),
        Command::Passwd(a) => block_on(account::passwd(&a)),
        Command::Mesh(c) => mesh::run(c),
        Command::Demo => block_on(demo::run()),
        Command::Completions(a) => docs::completions(&a),
        Command::Man(a) => docs::man(&a),
    }
}

/// Runs `f` on a multi-threaded runtime.
pub(crate) fn block_on(f: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(f);
    // A blocking reader may be stuck on a terminal's stdin after an interrupt; do not wait
    // for it for long.
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

/// Runs `f` on a runtime of one thread (blocking work still goes to a pool of its own): for
/// a transfer whose tasks hand each piece of a stream to one another, which on several
/// threads costs a wake-up across threads per piece.
pub(crate) fn block_on_one_thread(
    f: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(f);
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

/// Runs a transfer, abandoning it cleanly on SIGINT (Ctrl-C), SIGTERM or SIGHUP, with the
/// conventional exit code (128 + the signal's number): dropping it closes the connection
/// (an unfinished put stores nothing); a partial download into a file stays, for the same
/// command to resume.
async fn interruptible(f: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (code, why) = tokio::select! {
        r = f => return r,
        _ = int.recv() => (exit::INTERRUPTED, "interrupted"),
        _ = term.recv() => (exit::TERMINATED, "terminated (SIGTERM)"),
        _ = hup.recv() => (exit::HUNG_UP, "hung up (SIGHUP)"),
    };
    Err(Failure::new(code, why).into())
}
