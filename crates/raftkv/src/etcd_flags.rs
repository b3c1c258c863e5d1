//! etcd 3.4's server flags that raftkv honours besides its own: Raft timing in
//! milliseconds, request limits, logging, and switches raftkv accepts only at the value
//! it behaves as (`--enable-v2=false`, `--strict-reconfig-check=true`...), so an etcd
//! operator's unit file and config file start a raftkv member unchanged. Each refusal
//! says why; etcd's own error text where etcd refuses the same.

use server::config::{RaftTicks, RequestLimits};
use server::etcd::{REQUEST_BYTES_MAX, TXN_OPS_MAX};

/// etcd's default `--heartbeat-interval`, in milliseconds.
const ETCD_HEARTBEAT_MS: u64 = 100;
/// etcd's default `--election-timeout`, in milliseconds.
const ETCD_ELECTION_MS: u64 = 1000;
/// etcd's longest `--election-timeout`, in milliseconds.
const ELECTION_MS_MAX: u64 = 50_000;
/// raftkv's `--tick-ms` when no Raft timing flag is given.
pub const DEFAULT_TICK_MS: u64 = 50;

/// The etcd flags of `raftkv server` (flattened into its arguments).
#[derive(clap::Args, Clone, Debug)]
pub struct EtcdArgs {
    /// Milliseconds between heartbeats (etcd's; default 100 when --election-timeout is
    /// given). Sets the Raft tick to this; not with --tick-ms.
    #[arg(long)]
    pub heartbeat_interval: Option<u64>,
    /// Milliseconds without a leader before an election (etcd's; default 1000 when
    /// --heartbeat-interval is given): at least 5 heartbeat intervals, at most 50000.
    #[arg(long)]
    pub election_timeout: Option<u64>,
    /// Largest put, delete or txn request, encoded; at most etcd's default 1572864.
    #[arg(long, default_value_t = REQUEST_BYTES_MAX as u64)]
    pub max_request_bytes: u64,
    /// Most operations in a txn's compares or either branch; at most etcd's default 128.
    #[arg(long, default_value_t = TXN_OPS_MAX)]
    pub max_txn_ops: u64,
    /// `capnslog` (etcd 3.4's default): plain text lines; `zap`: one JSON object a line, as
    /// etcd's zap logger writes them.
    #[arg(long, default_value = "capnslog")]
    pub logger: String,
    /// Where logs go: `default` or `stderr` (the same), or `stdout`.
    #[arg(long, default_value = "default", value_delimiter = ',')]
    pub log_outputs: Vec<String>,
    /// Only false: raftkv serves etcd's v3 API, not v2.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", default_value = "false",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub enable_v2: bool,
    /// `basic` or `extensive`: raftkv exports the same metrics for both.
    #[arg(long, default_value = "basic")]
    pub metrics: String,
    /// Only true: raftkv always refuses a member change that would lose the quorum.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", default_value = "true",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub strict_reconfig_check: bool,
    /// Only false: Go's pprof endpoints have no counterpart in raftkv (use perf).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", default_value = "false",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub enable_pprof: bool,
    /// Origins that get CORS headers on the client URLs' plain HTTP answers (the JSON
    /// gateway, /health, /version, /metrics): `*` (every origin), or comma-separated
    /// scheme://host:port origins, as etcd 3.4's.
    #[arg(long, default_value = "*")]
    pub cors: String,
}

/// Makes every `--flag` switch of `cmd` (clap's `SetTrue`) also take `--flag=true` and
/// `--flag=false`, as etcd's Go flags do (`--client-cert-auth=true` in a unit file).
pub fn go_bools(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| {
        if !matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            return arg;
        }
        arg.action(clap::ArgAction::Set)
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .default_value("false")
            .value_parser(clap::builder::BoolishValueParser::new())
    })
}

/// The Raft tick and, when etcd's flags give them, the heartbeat and election in ticks.
/// etcd's model: the tick is the heartbeat interval and an election takes
/// `election-timeout / heartbeat-interval` ticks (rounded down, as etcd does).
pub fn raft_timing(tick_ms: Option<u64>, a: &EtcdArgs) -> Result<(u64, Option<RaftTicks>), String> {
    if a.heartbeat_interval.is_none() && a.election_timeout.is_none() {
        let tick_ms = tick_ms.unwrap_or(DEFAULT_TICK_MS);
        if tick_ms == 0 {
            return Err("--tick-ms must be at least 1".into());
        }
        return Ok((tick_ms, None));
    }
    if let Some(t) = tick_ms {
        return Err(format!(
            "--tick-ms {t} with --heartbeat-interval or --election-timeout: etcd's flags set \
             the tick (it becomes the heartbeat interval); give --tick-ms or etcd's flags, \
             not both"
        ));
    }
    let heartbeat = a.heartbeat_interval.unwrap_or(ETCD_HEARTBEAT_MS);
    let election = a.election_timeout.unwrap_or(ETCD_ELECTION_MS);
    // etcd 3.4's checks and words, in its order.
    if heartbeat == 0 {
        return Err(format!("--heartbeat-interval must be >0 (set to {heartbeat}ms)"));
    }
    if 5 * heartbeat > election {
        return Err(format!(
            "--election-timeout[{election}ms] should be at least as 5 times as \
             --heartbeat-interval[{heartbeat}ms]"
        ));
    }
    if election > ELECTION_MS_MAX {
        return Err(format!(
            "--election-timeout[{election}ms] is too long, and should be set less than \
             {ELECTION_MS_MAX}ms"
        ));
    }
    let ticks = u32::try_from(election / heartbeat).expect("at most 50000");
    Ok((heartbeat, Some(RaftTicks { heartbeat: 1, election: ticks })))
}

/// `--max-request-bytes` and `--max-txn-ops`: from 1 up to etcd's defaults, which the
/// log, the peer messages and apply are sized for (raising them is refused).
pub fn request_limits(a: &EtcdArgs) -> Result<RequestLimits, String> {
    let max_bytes = REQUEST_BYTES_MAX as u64;
    if !(1..=max_bytes).contains(&a.max_request_bytes) {
        return Err(format!(
            "--max-request-bytes {}: raftkv takes 1 to {max_bytes} (etcd's default); its log, \
             peer messages and apply are bounded for requests of at most that size",
            a.max_request_bytes
        ));
    }
    if !(1..=TXN_OPS_MAX).contains(&a.max_txn_ops) {
        return Err(format!(
            "--max-txn-ops {}: raftkv takes 1 to {TXN_OPS_MAX} (etcd's default); every \
             member's apply checks a txn against {TXN_OPS_MAX}, so a larger one could not \
             be applied",
            a.max_txn_ops
        ));
    }
    Ok(RequestLimits { request_bytes: a.max_request_bytes as usize, txn_ops: a.max_txn_ops })
}

/// Where log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogOutput {
    /// Standard error (etcd's `default` and `stderr`).
    Stderr,
    /// Standard output.
    Stdout,
}

/// Checks the flags raftkv takes only at one value, and `--logger`, `--metrics` and
/// `--log-outputs`; returns where logs go.
pub fn check(a: &EtcdArgs) -> Result<LogOutput, String> {
    if !["zap", "capnslog"].contains(&a.logger.as_str()) {
        return Err(format!("unknown logger option {:?} (use zap or capnslog)", a.logger));
    }
    if !["basic", "extensive"].contains(&a.metrics.as_str()) {
        return Err(format!("--metrics {:?}: use basic or extensive", a.metrics));
    }
    if a.enable_v2 {
        return Err("--enable-v2=true: raftkv serves etcd's v3 API only; the v2 API and \
                    its store are not implemented (use --enable-v2=false, etcd 3.4's default)"
            .into());
    }
    if !a.strict_reconfig_check {
        return Err("--strict-reconfig-check=false: raftkv always refuses a member change \
                    that would leave too few started members for a quorum (use true, \
                    etcd's default)"
            .into());
    }
    if a.enable_pprof {
        return Err("--enable-pprof=true: raftkv has no Go runtime and no /debug/pprof; \
                    profile it with perf (use --enable-pprof=false, etcd's default)"
            .into());
    }
    let mut outputs: Vec<LogOutput> = Vec::new();
    for o in &a.log_outputs {
        let out = match o.trim() {
            "default" | "stderr" => LogOutput::Stderr,
            "stdout" => LogOutput::Stdout,
            other => {
                return Err(format!(
                    "--log-outputs {other:?}: raftkv logs to default, stderr or stdout only \
                     (redirect one of them to keep a file; there is no journald writer)"
                ))
            }
        };
        if !outputs.contains(&out) {
            outputs.push(out);
        }
    }
    match outputs.as_slice() {
        [] => Ok(LogOutput::Stderr),
        [one] => Ok(*one),
        _ => Err("--log-outputs: give one of stderr (or default) and stdout, not both".into()),
    }
}

/// etcd's `--log-level` values as tracing's: `dpanic`, `panic` and `fatal` (levels
/// raftkv never logs at) log errors; raftkv's `trace` stays accepted.
pub fn log_level(level: &str) -> Result<tracing::Level, String> {
    match level {
        "dpanic" | "panic" | "fatal" => Ok(tracing::Level::ERROR),
        "error" | "warn" | "info" | "debug" | "trace" => Ok(level.parse().expect("a level")),
        other => Err(format!(
            "--log-level {other:?}: use debug, info, warn, error, dpanic, panic or fatal"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Args {
        #[arg(long)]
        tick_ms: Option<u64>,
        #[command(flatten)]
        etcd: EtcdArgs,
    }

    fn parse(argv: &[&str]) -> Result<Args, String> {
        let cmd = go_bools(<Args as clap::CommandFactory>::command());
        let m = cmd.try_get_matches_from(std::iter::once("x").chain(argv.iter().copied()));
        let m = m.map_err(|e| e.to_string())?;
        <Args as clap::FromArgMatches>::from_arg_matches(&m).map_err(|e| e.to_string())
    }

    fn timing(argv: &[&str]) -> Result<(u64, Option<RaftTicks>), String> {
        let a = parse(argv)?;
        raft_timing(a.tick_ms, &a.etcd)
    }

    #[test]
    fn etcds_timing_sets_the_tick_to_the_heartbeat_and_refuses_what_etcd_refuses() {
        assert_eq!(timing(&[]), Ok((50, None)));
        assert_eq!(timing(&["--tick-ms", "20"]), Ok((20, None)));
        let ticks = |e| Some(RaftTicks { heartbeat: 1, election: e });
        assert_eq!(timing(&["--heartbeat-interval", "100"]), Ok((100, ticks(10))));
        assert_eq!(timing(&["--election-timeout", "2500"]), Ok((100, ticks(25))));
        let both = ["--heartbeat-interval", "300", "--election-timeout", "3100"];
        assert_eq!(timing(&both), Ok((300, ticks(10))), "rounded down, as etcd");
        let e = timing(&["--heartbeat-interval", "300", "--election-timeout", "1000"]);
        assert_eq!(
            e.unwrap_err(),
            "--election-timeout[1000ms] should be at least as 5 times as \
             --heartbeat-interval[300ms]"
        );
        let at_the_bound = ["--heartbeat-interval", "200", "--election-timeout", "1000"];
        assert_eq!(timing(&at_the_bound), Ok((200, ticks(5))));
        let below = ["--heartbeat-interval", "200", "--election-timeout", "999"];
        assert!(timing(&below).unwrap_err().contains("at least as 5 times"));
        let e = timing(&["--election-timeout", "60000"]).unwrap_err();
        assert!(e.contains("is too long, and should be set less than 50000ms"), "{e}");
        assert_eq!(timing(&["--election-timeout", "50000"]), Ok((100, ticks(500))));
        let e = timing(&["--heartbeat-interval", "0"]).unwrap_err();
        assert_eq!(e, "--heartbeat-interval must be >0 (set to 0ms)");
        let e = timing(&["--tick-ms", "20", "--election-timeout", "1000"]).unwrap_err();
        assert!(e.contains("not both") && e.contains("becomes the heartbeat interval"), "{e}");
        assert!(timing(&["--tick-ms", "0"]).unwrap_err().contains("at least 1"));
    }

    #[test]
    fn request_limits_go_down_to_1_and_up_to_etcds_defaults() {
        let limits = |argv: &[&str]| request_limits(&parse(argv).unwrap().etcd);
        assert_eq!(limits(&[]), Ok(RequestLimits::default()));
        let small = limits(&["--max-request-bytes", "1024", "--max-txn-ops", "3"]);
        assert_eq!(small, Ok(RequestLimits { request_bytes: 1024, txn_ops: 3 }));
        let e = limits(&["--max-request-bytes", "10485760"]).unwrap_err();
        assert!(e.contains("1 to 1572864"), "{e}");
        assert!(limits(&["--max-txn-ops", "129"]).unwrap_err().contains("1 to 128"));
        assert!(limits(&["--max-txn-ops", "0"]).is_err());
        assert!(limits(&["--max-request-bytes", "0"]).is_err());
    }

    #[test]
    fn switches_take_go_booleans_and_only_the_values_raftkv_behaves_as() {
        let checked = |argv: &[&str]| check(&parse(argv)?.etcd);
        assert_eq!(checked(&[]), Ok(LogOutput::Stderr));
        let etcd_defaults = [
            "--enable-v2=false",
            "--strict-reconfig-check",
            "--enable-pprof=false",
            "--logger=zap",
            "--metrics=extensive",
            "--log-outputs=stdout",
        ];
        assert_eq!(checked(&etcd_defaults), Ok(LogOutput::Stdout));
        assert_eq!(checked(&["--log-outputs=default,stderr"]), Ok(LogOutput::Stderr));
        assert_eq!(checked(&["--strict-reconfig-check=true"]), Ok(LogOutput::Stderr));
        for (argv, why) in [
            (&["--enable-v2"][..], "v3 API only"),
            (&["--enable-v2=true"], "v3 API only"),
            (&["--strict-reconfig-check=false"], "always refuses"),
            (&["--enable-pprof=1"], "no /debug/pprof"),
            (&["--logger=foo"], "unknown logger option \"foo\""),
            (&["--metrics=foo"], "basic or extensive"),
            (&["--log-outputs=/var/log/etcd.log"], "redirect"),
            (&["--log-outputs=stderr,stdout"], "not both"),
            (&["--enable-v2=maybe"], "invalid value"),
        ] {
            let e = checked(argv).unwrap_err();
            assert!(e.contains(why), "{argv:?}: {e}");
        }
    }

    #[test]
    fn etcds_log_levels_are_accepted() {
        assert_eq!(log_level("fatal"), Ok(tracing::Level::ERROR));
        assert_eq!(log_level("warn"), Ok(tracing::Level::WARN));
        assert_eq!(log_level("debug"), Ok(tracing::Level::DEBUG));
        assert!(log_level("loud").unwrap_err().contains("dpanic"));
    }
}
