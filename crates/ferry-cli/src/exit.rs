//! Exit codes and the one line printed for a failure.

use std::fmt;
use std::process::ExitCode;

use ferry::proto::names::NameError;

/// Any other error.
pub const FAILURE: u8 = 1;
/// Usage error: a bad argument or bad input, wherever it is found (clap's own errors, an invalid
/// name or prefix, a folder given as FILE, a named file or credential that cannot be read,
/// options that do not go together, passwords that differ or are too short).
pub const USAGE: u8 = 2;
/// Authentication failed.
pub const AUTH_FAILED: u8 = 3;
/// Permission denied.
pub const FORBIDDEN: u8 = 4;
/// Not found.
pub const NOT_FOUND: u8 = 5;
/// The server is not the one the credential pins.
pub const SERVER_ID_MISMATCH: u8 = 6;
/// A folder transfer finished, but some files failed (as rsync's 23, "partial transfer").
pub const SOME_FAILED: u8 = 23;
/// Stopped by SIGHUP (128 + 1, as the shell reports a process the signal killed).
pub const HUNG_UP: u8 = 129;
/// Stopped by SIGINT (Ctrl-C).
pub const INTERRUPTED: u8 = 130;
/// Stopped by SIGTERM.
pub const TERMINATED: u8 = 143;

/// An error raised by the command itself, with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What to tell the user.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// A usage or bad-input error (exit code 2), found after clap parsed the command line.
pub fn bad_input(message: impl Into<String>) -> Failure {
    Failure::new(USAGE, message)
}

fn library_code(e: &ferry::Error) -> u8 {
    match e {
        ferry::Error::AuthFailed => AUTH_FAILED,
        ferry::Error::Forbidden(_) => FORBIDDEN,
        ferry::Error::NotFound(_) => NOT_FOUND,
        ferry::Error::ServerIdMismatch(_) => SERVER_ID_MISMATCH,
        // Names and new passwords come from the person at the command line.
        ferry::Error::Name(_) | ferry::Error::PasswordTooShort(_) => USAGE,
        _ => FAILURE,
    }
}

/// Whether the error is a write to a closed pipe.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        let io = match c.downcast_ref::<ferry::Error>() {
            Some(ferry::Error::Io(e)) => Some(e),
            _ => c.downcast_ref::<std::io::Error>(),
        };
        io.is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The exit code for an error: the first cause in the chain that has one.
pub fn code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        if let Some(e) = cause.downcast_ref::<ferry::Error>() {
            return library_code(e);
        }
        if cause.downcast_ref::<NameError>().is_some() {
            return USAGE;
        }
    }
    FAILURE
}

/// The one line describing an error (without the `ferry: ` prefix).
pub fn message(err: &anyhow::Error) -> String {
    // An authentication failure says nothing more, whatever context was added.
    if err.chain().any(|c| {
        matches!(
            c.downcast_ref::<ferry::Error>(),
            Some(ferry::Error::AuthFailed)
        )
    }) {
        return "authentication failed".to_owned();
    }
    // Like `{:#}`, but skipping a cause its wrapper's message already quotes (the library's
    // errors often include their source's text).
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    // A server's error message is text from elsewhere too.
    crate::output::printable(&one_line(&out)).into_owned()
}

/// Joins the non-empty lines of `text` into one.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints `ferry: <message>` to stderr and returns the exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("ferry: {}", message(err));
    ExitCode::from(code(err))
}

/// Handles a command-line parsing error: help and version go to stdout with status 0;
/// anything else is one line on stderr with status 2.
pub fn usage(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if !err.use_stderr() || err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = err.print();
        return ExitCode::from(if err.use_stderr() { USAGE } else { 0 });
    }
    eprintln!("ferry: {}", usage_line(&err.render().to_string()));
    ExitCode::from(USAGE)
}

/// clap's rendered error as one line: its first paragraph (what is wrong) and its "did you
/// mean" tips (`tip: a similar subcommand exists: 'put'`); usage and other advice dropped.
fn usage_line(rendered: &str) -> String {
    let mut paragraphs = rendered.split("\n\n");
    let first = paragraphs.next().unwrap_or("");
    let mut line = one_line(first.strip_prefix("error: ").unwrap_or(first));
    for p in paragraphs {
        let p = one_line(p);
        if p.starts_with("tip:") && p.contains("similar") {
            line.push_str(&format!(" ({p})"));
        }
    }
    line.push_str(" (see --help)");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_lines_keep_suggestions() {
        let rendered = "error: unrecognized subcommand 'pt'\n\n  tip: a similar subcommand \
                        exists: 'put'\n\nUsage: ferry <COMMAND>\n\nFor more information, \
                        try '--help'.\n";
        assert_eq!(
            usage_line(rendered),
            "unrecognized subcommand 'pt' (tip: a similar subcommand exists: 'put') (see --help)"
        );
        let rendered = "error: unexpected argument '--x' found\n\n  tip: to pass '--x' as a \
                        value, use '-- --x'\n\nUsage: ferry ls\n";
        assert_eq!(
            usage_line(rendered),
            "unexpected argument '--x' found (see --help)"
        );
    }

    #[test]
    fn codes() {
        let e = anyhow::Error::new(ferry::Error::AuthFailed).context("while connecting");
        assert_eq!(code(&e), AUTH_FAILED);
        assert_eq!(message(&e), "authentication failed");
        let e = anyhow::Error::new(ferry::Error::Forbidden("role 'r' may not put 'x'".into()));
        assert_eq!(code(&e), FORBIDDEN);
        assert_eq!(message(&e), "permission denied: role 'r' may not put 'x'");
        let e = anyhow::Error::new(ferry::Error::NotFound("no source 'x'".into()));
        assert_eq!(code(&e), NOT_FOUND);
        let e = anyhow::Error::new(ferry::Error::ServerIdMismatch("h:1".into()));
        assert_eq!(code(&e), SERVER_ID_MISMATCH);
        let e = anyhow::Error::new(Failure::new(NOT_FOUND, "no client 'x'"));
        assert_eq!(code(&e), NOT_FOUND);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = anyhow::Error::new(ferry::Error::Connect {
            addr: "h:1".into(),
            source: io,
        })
        .context("ls");
        assert_eq!(message(&e), "ls: cannot connect to h:1: refused");
        let e = anyhow::Error::new(ferry::proto::names::SourceName::parse("").unwrap_err())
            .context("put");
        assert_eq!(code(&e), USAGE);
        let e = anyhow::Error::new(ferry::Error::Name(
            ferry::proto::names::validate_prefix("\u{7}").unwrap_err(),
        ));
        assert_eq!(code(&e), USAGE);
        let e = anyhow::Error::new(bad_input("x is a folder")).context("put");
        assert_eq!(code(&e), USAGE);
        let e = anyhow::anyhow!("a\n  b\n\nc");
        assert_eq!(code(&e), FAILURE);
        assert_eq!(message(&e), "a b c");
    }
}
