//! `raftkv playground`: a local 3-member cluster in one command.
//!
//! The members are `raftkv server` child processes, and none may outlive the playground
//! (a member left running holds its ports and data dir, and the next playground fails
//! to start). So each member is started with `--stop-when-stdin-closes` and a pipe as
//! its stdin, whose other end only the playground holds: however the playground ends —
//! Ctrl-C, SIGTERM, an error, a panic, even `kill -9` — the pipe closes and every member
//! stops as on SIGTERM. On Ctrl-C, SIGTERM and errors the playground also waits for them
//! (and kills any that has not stopped within [`STOP_GRACE`]), so that when it exits its
//! members are gone.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The members' names.
const NAMES: [&str; 3] = ["n1", "n2", "n3"];
/// The default client ports; each member's peer port is its client port + 1, its
/// metrics port + 2 (2379, 2380, 2381 as etcd's).
pub const DEFAULT_CLIENT_PORTS: &str = "2379,22379,32379";
/// How long stopping members may take before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The playground's settings (its command-line flags).
pub struct Options {
    /// Where the members keep their data (one subdirectory each) and their logs.
    pub data_dir: PathBuf,
    /// Wipe `data_dir` first.
    pub fresh: bool,
    /// Each member's client port.
    pub client_ports: Vec<u16>,
    /// Extra flags for every member's `raftkv server` (given after `--`).
    pub server_flags: Vec<String>,
}

/// One running member.
struct Member {
    name: &'static str,
    child: Child,
    /// The write end of the member's stdin: closing it stops the member.
    stdin: Option<ChildStdin>,
}

/// The running members; dropping this stops them.
struct Members(Vec<Member>);

impl Members {
    /// Stops every member: closes their stdin (each stops as on SIGTERM), waits up to
    /// [`STOP_GRACE`], then kills any still running. Returns the names of those killed.
    fn stop(&mut self) -> Vec<&'static str> {
        for m in &mut self.0 {
            m.stdin.take();
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut killed = Vec::new();
        for m in &mut self.0 {
            while matches!(m.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(m.child.try_wait(), Ok(None)) {
                let _ = m.child.kill();
                killed.push(m.name);
            }
            let _ = m.child.wait();
        }
        killed
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the playground until Ctrl-C or SIGTERM.
pub async fn run(opts: Options) -> Result<(), String> {
    if opts.client_ports.len() != NAMES.len() || opts.client_ports.iter().any(|p| *p > 65533) {
        return Err(format!(
            "--client-ports: give {} ports up to 65533, comma-separated (each member also \
             uses the next two ports)",
            NAMES.len()
        ));
    }
    // Listening from the start: a signal while members start stops them too.
    let mut stop = StopSignal::install()?;
    let data_dir = &opts.data_dir;
    if opts.fresh && data_dir.exists() {
        std::fs::remove_dir_all(data_dir)
            .map_err(|e| format!("removing {}: {e}", data_dir.display()))?;
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
    let mut members = Members(Vec::new());
    for (name, port) in NAMES.into_iter().zip(&opts.client_ports) {
        members.0.push(start_member(name, *port, &opts)?);
    }
    let pids: Vec<String> =
        members.0.iter().map(|m| format!("{} (pid {})", m.name, m.child.id())).collect();
    println!("raftkv playground: starting {}", pids.join(", "));
    let endpoints: Vec<String> =
        opts.client_ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let started = tokio::select! {
        r = wait_ready(&mut members, &endpoints, data_dir) => Some(r),
        _ = stop.recv() => None,
    };
    if let Some(r) = started {
        r?;
        print_usage(&opts, &endpoints);
        stop.recv().await;
    }
    let killed = members.stop();
    if !killed.is_empty() {
        eprintln!("warning: killed {} after {STOP_GRACE:?}", killed.join(", "));
    }
    println!("stopped; data kept in {} (use --fresh to start over)", data_dir.display());
    Ok(())
}

fn start_member(name: &'static str, client_port: u16, opts: &Options) -> Result<Member, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding the raftkv binary: {e}"))?;
    let cluster: Vec<String> = NAMES
        .iter()
        .zip(&opts.client_ports)
        .map(|(n, p)| format!("{n}=http://127.0.0.1:{}", p + 1))
        .collect();
    let log_path = opts.data_dir.join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let mut child = Command::new(exe)
        .arg("server")
        .args(["--name", name])
        .arg("--data-dir")
        .arg(opts.data_dir.join(name))
        .args(["--listen-client-urls", &url(client_port)])
        .args(["--listen-peer-urls", &url(client_port + 1)])
        .args(["--listen-metrics-urls", &url(client_port + 2)])
        .args(["--initial-cluster", &cluster.join(",")])
        .args(&opts.server_flags)
        .arg("--stop-when-stdin-closes")
        .stdin(Stdio::piped())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting member {name}: {e}"))?;
    let stdin = child.stdin.take();
    Ok(Member { name, child, stdin })
}

/// Waits for a leader so the printed commands work right away; fails if a member exited.
async fn wait_ready(
    members: &mut Members,
    endpoints: &[String],
    data_dir: &Path,
) -> Result<(), String> {
    let opts = client::ClientOptions { deadline: Duration::from_secs(10), exactly_once: true };
    let mut c = client::Client::connect(endpoints, opts).map_err(|e| e.to_string())?;
    let ready = c.get(b"playground-ready-check", false).await;
    for m in &mut members.0 {
        if let Ok(Some(status)) = m.child.try_wait() {
            let log = data_dir.join(format!("{}.log", m.name));
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("member {} exited ({status}):\n{tail}", m.name));
        }
    }
    if let Err(e) = ready {
        eprintln!("warning: the cluster did not answer yet: {e}");
    }
    Ok(())
}

fn print_usage(opts: &Options, endpoints: &[String]) {
    println!("raftkv playground: 3 members running, data in {}", opts.data_dir.display());
    for (name, port) in NAMES.iter().zip(&opts.client_ports) {
        println!(
            "  {name}: client http://127.0.0.1:{port}  peer :{}  metrics http://127.0.0.1:{}/metrics  log {}",
            port + 1,
            port + 2,
            opts.data_dir.join(format!("{name}.log")).display()
        );
    }
    let flag = if opts.client_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
        == DEFAULT_CLIENT_PORTS
    {
        String::new()
    } else {
        format!(" --endpoints {}", endpoints.join(","))
    };
    println!("\nTry (in another terminal):");
    println!("  cargo run --release -p raftkv -- put{flag} greeting hello");
    println!("  cargo run --release -p raftkv -- get{flag} greeting");
    println!("  cargo run --release -p raftkv -- status{flag}");
    println!(
        "  ETCDCTL_API=3 etcdctl --endpoints={} get greeting   # etcd's own CLI works too",
        endpoints[0]
    );
    println!("\nCtrl-C stops the cluster.");
}

/// Ctrl-C (SIGINT) or SIGTERM, listened for from [`StopSignal::install`] on.
struct StopSignal {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 2],
}

impl StopSignal {
    fn install() -> Result<StopSignal, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen =
                |kind, name| signal(kind).map_err(|e| format!("listening for {name}: {e}"));
            let signals = [
                listen(SignalKind::interrupt(), "SIGINT")?,
                listen(SignalKind::terminate(), "SIGTERM")?,
            ];
            Ok(StopSignal { signals })
        }
        #[cfg(not(unix))]
        Ok(StopSignal {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let [int, term] = &mut self.signals;
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
