//! etcdctl's `--user` and `--password` for `raftkv put/get/...`: `--user NAME:PASSWORD`,
//! `--user NAME --password PASSWORD` (the name may then hold a colon), or `--user NAME`
//! alone, when the password is asked for on the terminal (not echoed) or, when
//! standard input is not a terminal, read as its first line.

use client::Credentials;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

/// The authentication flags, etcdctl's names.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AuthArgs {
    /// Authenticate as this user: NAME:PASSWORD, or NAME alone to be asked for the
    /// password (on the terminal, or the first line of standard input).
    #[arg(long)]
    pub user: Option<String>,
    /// The password of --user (which is then the whole name, colons included).
    #[arg(long, requires = "user")]
    pub password: Option<String>,
}

impl AuthArgs {
    /// The credentials the flags give, asking for the password when only a name is
    /// given; waits at most `wait` for a line on a standard input that is not a
    /// terminal. `None` without --user.
    pub fn credentials(&self, wait: Duration) -> Result<Option<Credentials>, String> {
        let Some(user) = &self.user else { return Ok(None) };
        let credentials = |user: &str, password: &str| {
            Some(Credentials { user: user.to_string(), password: password.to_string() })
        };
        if let Some(password) = &self.password {
            return Ok(credentials(user, password));
        }
        if let Some((name, password)) = user.split_once(':') {
            if name.is_empty() {
                // etcdctl sends no credentials then, and the cluster answers "user name
                // is empty" to the command.
                return Err(format!(
                    "--user {user}: the user name is empty; use --user NAME:PASSWORD"
                ));
            }
            return Ok(credentials(name, password));
        }
        let password = if std::io::stdin().is_terminal() {
            ask_on_terminal().map_err(|e| format!("--user {user}: reading the password: {e}"))?
        } else {
            first_line_of_stdin(wait).ok_or_else(|| {
                format!(
                    "--user {user}: no password: standard input is not a terminal and gave no \
                     line (it ended, or nothing came within {}s); pass --user {user}:PASSWORD, \
                     --password PASSWORD, or the password as the first line of standard input",
                    wait.as_secs()
                )
            })?
        };
        Ok(credentials(user, &password))
    }
}

/// Asks for the password on the terminal, without echo (`stty -echo`, as etcdctl's
/// prompt does), the prompt on stderr so stdout keeps only the command's output.
fn ask_on_terminal() -> std::io::Result<String> {
    let mut stderr = std::io::stderr();
    write!(stderr, "Password: ")?;
    stderr.flush()?;
    let stty = |arg: &str| std::process::Command::new("stty").arg(arg).status();
    let hidden = stty("-echo").is_ok_and(|s| s.success());
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hidden {
        let _ = stty("echo");
    }
    writeln!(stderr)?;
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// The first line of standard input, without its line end; `None` if it ends (or
/// fails) before giving one or gives none within `wait`: a pipe that stays open with
/// nothing in it must not hang the command. Read on a thread of its own, which the
/// process's exit ends if it still waits.
fn first_line_of_stdin(wait: Duration) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(read.ok().filter(|n| *n > 0).map(|_| line));
    });
    let line = rx.recv_timeout(wait).ok().flatten()?;
    Some(line.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(user: &str, password: Option<&str>) -> AuthArgs {
        AuthArgs { user: Some(user.into()), password: password.map(str::to_string) }
    }

    #[test]
    fn user_splits_at_the_first_colon_unless_password_is_given() {
        let wait = Duration::from_secs(1);
        let got = args("root:pw:x", None).credentials(wait).unwrap().unwrap();
        assert_eq!((got.user.as_str(), got.password.as_str()), ("root", "pw:x"));
        let got = args("a:b", Some("pw")).credentials(wait).unwrap().unwrap();
        assert_eq!((got.user.as_str(), got.password.as_str()), ("a:b", "pw"));
        assert_eq!(AuthArgs::default().credentials(wait), Ok(None));
        let e = args(":pw", None).credentials(wait).unwrap_err();
        assert_eq!(e, "--user :pw: the user name is empty; use --user NAME:PASSWORD");
    }
}
