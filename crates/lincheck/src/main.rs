//! `lincheck`: checks a recorded history file for linearizability.
//!
//! The last line printed is exactly `linearizable`, `not linearizable` or
//! `unknown`; the exit code is 0, 1 or 2 respectively, and 2 for bad input.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use lincheck::{
    check, parse_jepsen_register_history, parse_kv_history, CheckOptions, History, KvModel, Model,
    RegisterModel, Verdict,
};

/// Which file format, and with it which model.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// `kv/` files: EDN-like lines, a string map with get / put / append.
    Kv,
    /// `jepsen-etcd/` files: Jepsen logs of a single register.
    Jepsen,
}

/// Checks a recorded client history for linearizability.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Format of the history file.
    #[arg(long, value_enum)]
    format: Format,
    /// Give up with `unknown` after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// The history file.
    file: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let text = match std::fs::read_to_string(&args.file) {
        Ok(text) => text,
        Err(e) => return fail(&format!("cannot read {}: {e}", args.file.display())),
    };
    let options =
        CheckOptions { timeout: Some(Duration::from_secs(args.timeout_secs)), max_steps: None };
    let name = args.file.display().to_string();
    let result =
        match args.format {
            Format::Kv => parse_kv_history(&text)
                .map(|h| run(&KvModel::empty_is_absent(), &h, &options, &name)),
            Format::Jepsen => parse_jepsen_register_history(&text)
                .map(|h| run(&RegisterModel, &h, &options, &name)),
        };
    let (mut report, verdict) = match result {
        Ok(checked) => checked,
        Err(e) => return fail(&format!("{name}: {e}")),
    };
    let code = match &verdict {
        Verdict::Linearizable => 0,
        Verdict::NotLinearizable(violation) => {
            report.push_str(&violation.to_string());
            1
        }
        Verdict::Unknown(reason) => {
            report.push_str(&format!("no verdict: {reason}\n"));
            2
        }
    };
    report.push_str(verdict.label());
    report.push('\n');
    // A closed pipe (`| head`) is no reason to fail: the exit code still
    // carries the verdict.
    let _ = std::io::stdout().lock().write_all(report.as_bytes());
    ExitCode::from(code)
}

/// Checks; returns the report so far and the verdict.
fn run<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: &CheckOptions,
    name: &str,
) -> (String, Verdict) {
    let started = Instant::now();
    let verdict = check(model, history, options);
    let summary = format!(
        "{name}: {} operations checked in {:.3} s (times below are line numbers)\n",
        history.len(),
        started.elapsed().as_secs_f64()
    );
    (summary, verdict)
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {message}");
    ExitCode::from(2)
}
