//! Exit statuses of the `raftkv` commands: etcdctl 3.4's, so a script written for
//! etcdctl reads raftkv's the same way. etcdctl's constants (`ctlv3/command/error.go`)
//! are `ExitError` 1, `ExitBadConnection` 2, `ExitInvalidInput` 3, `ExitBadFeature` 4,
//! `ExitInterrupted` 5, `ExitIO` 6 and `ExitBadArgs` 128; which one it returns for what
//! was checked case by case against etcdctl 3.4.23 on an etcd 3.4.23 with auth enabled
//! (the same cases run against raftkv in `tests/cli.rs`,
//! `failures_exit_with_etcdctls_statuses`):
//!
//! | case | etcdctl 3.4 | raftkv |
//! |---|---|---|
//! | success; `--help`; no command (help on stdout: `etcdctl`, `etcdctl snapshot`) | 0 | 0 [`SUCCESS`] |
//! | unknown flag, a flag's value malformed, unknown command | 1 | 1 [`ERROR`] |
//! | a request refused (auth on and no `--user`: "user name is empty"; permission denied) | 1 | 1 [`ERROR`] |
//! | unreachable endpoint, without `--user` | 1 | 1 [`ERROR`] |
//! | `snapshot status`/`restore` of a missing or damaged file; any other failure | 1 | 1 [`ERROR`] |
//! | wrong password (`put`, `get`, `del`, `append`, `status`, `bench`) | 2 | 2 [`BAD_CONNECTION`] |
//! | unreachable endpoint with `--user` (authenticating is connecting) | 2 | 2 [`BAD_CONNECTION`] |
//! | `snapshot save` fails (wrong or no password, unreachable, file not writable) | 5 | 5 [`INTERRUPTED`] |
//! | missing or extra argument (`put k`, `get`, `snapshot save`) | 128 | 128 [`BAD_ARGS`] |
//! | a TLS flag's file unreadable, `--cert` without `--key` | 128 | 128 [`BAD_ARGS`] |
//! | a panic (any thread; raftkv's own, see `PANIC_EXIT_STATUS` in main.rs) | — | 70 |
//!
//! etcdctl's 3 (`ExitInvalidInput`), 4 (`ExitBadFeature`) and 6 (`ExitIO`) belong to
//! commands raftkv does not have (`make-mirror`, `migrate`, `check`), so they have no
//! constant here. `raftkv bench` has no etcdctl counterpart (etcd's `benchmark` tool is
//! another program): it uses the statuses of the etcdctl commands it resembles, 2 when
//! `--user` does not authenticate and 1 when the cluster refuses its requests.

use std::fmt;

/// The command did what it was asked.
pub const SUCCESS: u8 = 0;
/// A failure with no more specific status (etcdctl's `ExitError`): the cluster refused
/// the request, no member answered, a file could not be read, a flag is unknown.
pub const ERROR: u8 = 1;
/// Connecting to the cluster failed (etcdctl's `ExitBadConnection`), which with
/// `--user` includes authenticating: a wrong password, or no member reached to ask.
pub const BAD_CONNECTION: u8 = 2;
/// `snapshot save` failed, whatever the reason (etcdctl's `ExitInterrupted`).
pub const INTERRUPTED: u8 = 5;
/// The command's arguments are wrong (etcdctl's `ExitBadArgs`): a positional argument
/// missing or extra, or a TLS flag naming a file that cannot be used.
pub const BAD_ARGS: u8 = 128;

/// A command's failure: the one-line message for stderr and the status to exit with.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// The exit status, one of this module's constants.
    pub status: u8,
    /// What went wrong and what to do, on one line.
    pub message: String,
}

impl Failure {
    /// A failure exiting with `status`.
    pub fn new(status: u8, message: impl Into<String>) -> Failure {
        debug_assert_ne!(status, SUCCESS, "a failure exits non-zero");
        Failure { status, message: message.into() }
    }
}

impl From<String> for Failure {
    /// A failure with no more specific status: [`ERROR`].
    fn from(message: String) -> Failure {
        Failure::new(ERROR, message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::new(ERROR, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// `result.or_exit(status)?`: an error of any printable kind as a [`Failure`] with
/// `status`.
pub trait OrExit<T> {
    /// The error, printed, as a failure exiting with `status`.
    fn or_exit(self, status: u8) -> Result<T, Failure>;
}

impl<T, E: fmt::Display> OrExit<T> for Result<T, E> {
    fn or_exit(self, status: u8) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(status, e.to_string()))
    }
}

/// The status for a command line clap refused (or answered with help), as etcdctl's:
/// help, asked for or shown because no command was given, is a success; a positional
/// argument missing or extra is [`BAD_ARGS`] (etcdctl's commands count their
/// arguments); everything else clap refuses (an unknown flag or command, a malformed
/// value, a missing required flag) is [`ERROR`], as cobra's errors are in etcdctl.
pub fn of_usage_error(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => SUCCESS,
        ErrorKind::MissingRequiredArgument | ErrorKind::UnknownArgument if !names_a_flag(e) => {
            BAD_ARGS
        }
        _ => ERROR,
    }
}

/// Whether the argument clap complains of is a flag (`--name <NAME>`, `--bogus`) rather
/// than a positional one (`<VALUE>`, an extra `c`).
fn names_a_flag(e: &clap::Error) -> bool {
    use clap::error::{ContextKind, ContextValue};
    match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.starts_with('-'),
        Some(ContextValue::Strings(args)) => args.iter().any(|a| a.starts_with('-')),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    #[command(name = "t")]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Cmd {
        Put {
            #[arg(long)]
            lease: Option<u64>,
            key: String,
            value: String,
        },
        Server {
            #[arg(long)]
            name: String,
        },
    }

    fn status(argv: &[&str]) -> u8 {
        of_usage_error(&Cli::try_parse_from(argv).expect_err("refused"))
    }

    #[test]
    fn usage_errors_exit_as_etcdctls() {
        assert_eq!(status(&["t"]), SUCCESS, "no command: help");
        assert_eq!(status(&["t", "--help"]), SUCCESS);
        assert_eq!(status(&["t", "put", "k"]), BAD_ARGS, "missing argument");
        assert_eq!(status(&["t", "put", "k", "v", "x"]), BAD_ARGS, "extra argument");
        assert_eq!(status(&["t", "put", "--bogus", "k", "v"]), ERROR, "unknown flag");
        assert_eq!(status(&["t", "put", "--lease", "x", "k", "v"]), ERROR, "bad value");
        assert_eq!(status(&["t", "bogus"]), ERROR, "unknown command");
        assert_eq!(status(&["t", "server"]), ERROR, "missing required flag");
    }

    #[test]
    fn errors_of_any_kind_become_failures_with_a_status() {
        let r: Result<(), std::io::Error> = Err(std::io::Error::other("disk on fire"));
        assert_eq!(r.or_exit(INTERRUPTED), Err(Failure::new(INTERRUPTED, "disk on fire")));
        assert_eq!(Failure::from("x".to_string()).status, ERROR);
    }
}
