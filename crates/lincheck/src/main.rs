//! `lincheck`: checks a recorded history file for linearizability.
//!
//! The last line printed is exactly `linearizable`, `not linearizable` or
//! `unknown`; the exit code is 0, 1 or 2 respectively, and 2 for bad input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use lincheck::{
    check, parse_jepsen_register_history, parse_kv_history, CheckOptions, History, KvModel,
    Model, RegisterModel, Verdict,
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
    let options = CheckOptions {
        timeout: Some(Duration::from_secs(args.timeout_secs)),
        max_steps: None,
    };
    let name = args.file.display().to_string();
    let result = match args.format {
        Format::Kv => parse_kv_history(&text)
            .map(|h| run(&KvModel::empty_is_absent(), &h, &options, &name)),
        Format::Jepsen => parse_jepsen_register_history(&text)
            .map(|h| run(&RegisterModel, &h, &options, &name)),
    };
    match result {
        Err(e) => fail(&format!("{name}: {e}")),
        Ok(Verdict::Linearizable) => {
            println!("linearizable");
            ExitCode::from(0)
        }
        Ok(Verdict::NotLinearizable(violation)) => {
            print!("{violation}");
            println!("not linearizable");
            ExitCode::from(1)
        }
        Ok(Verdict::Unknown(reason)) => {
            println!("no verdict: {reason}");
            println!("unknown");
            ExitCode::from(2)
        }
    }
}

/// Checks and reports what was checked and how long it took.
fn run<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: &CheckOptions,
    name: &str,
) -> Verdict {
    let started = Instant::now();
    let verdict = check(model, history, options);
    println!(
        "{name}: {} operations checked in {:.3} s (times below are line numbers)",
        history.len(),
        started.elapsed().as_secs_f64()
    );
    verdict
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}
