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
//!
//! With `--tls` both ports speak mutual TLS, as production etcd clusters do: a throwaway
//! CA, one certificate the members use on both ports, and one client certificate are
//! made in `DATA_DIR/certs` (rcgen, `tls::generate`) unless they are already there, so
//! a restarted playground keeps the files its user's commands name.

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
    /// Mutual TLS on both ports, with throwaway certificates.
    pub tls: bool,
}

/// The certificate files of a `--tls` playground, in `DATA_DIR/certs`.
struct CertFiles {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

/// The common name of the playground's client certificate. With auth enabled, a
/// request without a token runs as this user (etcd's `--client-cert-auth` rule).
const CLIENT_CN: &str = "playground-client";

impl CertFiles {
    fn in_dir(data_dir: &Path) -> CertFiles {
        let dir = data_dir.join("certs");
        let pair = |name: &str| (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        CertFiles { ca: dir.join("ca.crt"), server: pair("server"), client: pair("client") }
    }

    /// The files, made now unless all of them exist.
    fn ensure(data_dir: &Path) -> Result<CertFiles, String> {
        let files = CertFiles::in_dir(data_dir);
        let all = [&files.ca, &files.server.0, &files.server.1, &files.client.0, &files.client.1];
        if all.iter().all(|f| f.exists()) {
            return Ok(files);
        }
        let dir = data_dir.join("certs");
        let ca = tls::generate::TestCa::create(&dir, "ca").map_err(|e| e.to_string())?;
        let hosts = ["127.0.0.1", "localhost"];
        ca.issue(&dir, "server", "raftkv-playground", &hosts).map_err(|e| e.to_string())?;
        ca.issue(&dir, "client", CLIENT_CN, &[]).map_err(|e| e.to_string())?;
        Ok(files)
    }

    /// `raftkv server` flags: mutual TLS on both ports.
    fn server_flags(&self) -> Vec<String> {
        let p = |f: &PathBuf| f.display().to_string();
        let mut flags = Vec::new();
        for prefix in ["--", "--peer-"] {
            flags.push(format!("{prefix}cert-file={}", p(&self.server.0)));
            flags.push(format!("{prefix}key-file={}", p(&self.server.1)));
            flags.push(format!("{prefix}trusted-ca-file={}", p(&self.ca)));
            flags.push(format!("{prefix}client-cert-auth"));
        }
        flags
    }

    /// etcdctl's (and raftkv's CLI) TLS flags.
    fn client_flags(&self) -> String {
        let p = |f: &PathBuf| f.display().to_string();
        format!("--cacert={} --cert={} --key={}", p(&self.ca), p(&self.client.0), p(&self.client.1))
    }

    fn client_tls(&self) -> Result<tls::ClientTls, String> {
        tls::ClientTls::new(tls::ClientFiles {
            ca_file: self.ca.clone(),
            cert_and_key: Some(self.client.clone()),
            flags: ["--cacert", "--cert", "--key"],
        })
        .map_err(|e| e.to_string())
    }
}

/// One running member.
struct Member {
    name: &'static str,
    child: Child,
    /// The write end of the member's stdin: closing it stops the member.
    stdin: Option<ChildStdin>,
    /// Whether its exit was already reported (see [`watch_members`]).
    exit_reported: bool,
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
    let certs = if opts.tls { Some(CertFiles::ensure(data_dir)?) } else { None };
    let mut members = Members(Vec::new());
    for (name, port) in NAMES.into_iter().zip(&opts.client_ports) {
        members.0.push(start_member(name, *port, &opts, certs.as_ref())?);
    }
    let pids: Vec<String> =
        members.0.iter().map(|m| format!("{} (pid {})", m.name, m.child.id())).collect();
    println!("raftkv playground: starting {}", pids.join(", "));
    let scheme = scheme(opts.tls);
    let endpoints: Vec<String> =
        opts.client_ports.iter().map(|p| format!("{scheme}://127.0.0.1:{p}")).collect();
    let client_tls = certs.as_ref().map(CertFiles::client_tls).transpose()?;
    let started = tokio::select! {
        r = wait_ready(&mut members, &endpoints, data_dir, client_tls.as_ref()) => Some(r),
        _ = stop.recv() => None,
    };
    if let Some(r) = started {
        r?;
        print_usage(&opts, &endpoints, certs.as_ref());
        tokio::select! {
            _ = watch_members(&mut members, data_dir) => {}
            _ = stop.recv() => {}
        }
    }
    let killed = members.stop();
    if !killed.is_empty() {
        eprintln!("warning: killed {} after {STOP_GRACE:?}", killed.join(", "));
    }
    println!("stopped; data kept in {} (use --fresh to start over)", data_dir.display());
    Ok(())
}

fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

fn start_member(
    name: &'static str,
    client_port: u16,
    opts: &Options,
    certs: Option<&CertFiles>,
) -> Result<Member, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding the raftkv binary: {e}"))?;
    let scheme = scheme(certs.is_some());
    let cluster: Vec<String> = NAMES
        .iter()
        .zip(&opts.client_ports)
        .map(|(n, p)| format!("{n}={scheme}://127.0.0.1:{}", p + 1))
        .collect();
    let log_path = opts.data_dir.join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let url = |port: u16| format!("{scheme}://127.0.0.1:{port}");
    let mut child = Command::new(exe)
        .arg("server")
        .args(["--name", name])
        .arg("--data-dir")
        .arg(opts.data_dir.join(name))
        .args(["--listen-client-urls", &url(client_port)])
        .args(["--listen-peer-urls", &url(client_port + 1)])
        .args(["--listen-metrics-urls", &format!("http://127.0.0.1:{}", client_port + 2)])
        .args(certs.map(CertFiles::server_flags).unwrap_or_default())
        .args(["--initial-cluster", &cluster.join(",")])
        .args(&opts.server_flags)
        .arg("--stop-when-stdin-closes")
        .stdin(Stdio::piped())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting member {name}: {e}"))?;
    let stdin = child.stdin.take();
    Ok(Member { name, child, stdin, exit_reported: false })
}

/// Waits for a leader so the printed commands work right away; fails if a member exited.
async fn wait_ready(
    members: &mut Members,
    endpoints: &[String],
    data_dir: &Path,
    tls: Option<&tls::ClientTls>,
) -> Result<(), String> {
    let opts = client::ClientOptions::default();
    let mut c = client::Client::connect_tls(endpoints, opts, tls).map_err(|e| e.to_string())?;
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

/// How often a running playground checks that its members still run.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// How many of its log's last lines a member that exited is reported with.
const LOG_TAIL_LINES: usize = 10;

/// Reports, once each, members that exit while the playground runs (killed by hand, or
/// failed), with the end of their log, and what that leaves; returns when none is left.
/// The others keep running: two of three members still make a quorum, which is what a
/// user killing a member in a playground usually wants to see.
async fn watch_members(members: &mut Members, data_dir: &Path) {
    let quorum = members.0.len() / 2 + 1;
    let mut quorum_loss_reported = false;
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        for m in &mut members.0 {
            if m.exit_reported {
                continue;
            }
            let Ok(Some(status)) = m.child.try_wait() else { continue };
            m.exit_reported = true;
            let log = data_dir.join(format!("{}.log", m.name));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n    ");
            eprintln!(
                "warning: member {} (pid {}) exited ({status}); the others keep running \
                 (to restart it: Ctrl-C, then run the playground again); the last lines of \
                 {}:\n    {tail}",
                m.name,
                m.child.id(),
                log.display()
            );
        }
        let running = members.0.iter().filter(|m| !m.exit_reported).count();
        if running == 0 {
            eprintln!("every member exited; stopping the playground");
            return;
        }
        if running < quorum && !quorum_loss_reported {
            quorum_loss_reported = true;
            eprintln!(
                "warning: {running} of {} members run, fewer than a quorum ({quorum}): the \
                 cluster cannot serve until a member is back (Ctrl-C, then run the playground \
                 again: it restarts the same cluster)",
                members.0.len()
            );
        }
    }
}

fn print_usage(opts: &Options, endpoints: &[String], certs: Option<&CertFiles>) {
    println!("raftkv playground: 3 members running, data in {}", opts.data_dir.display());
    for ((name, port), endpoint) in NAMES.iter().zip(&opts.client_ports).zip(endpoints) {
        println!(
            "  {name}: client {endpoint}  peer :{}  metrics http://127.0.0.1:{}/metrics  log {}",
            port + 1,
            port + 2,
            opts.data_dir.join(format!("{name}.log")).display()
        );
    }
    let default_ports = opts.client_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
        == DEFAULT_CLIENT_PORTS;
    let mut flag = if default_ports && certs.is_none() {
        String::new()
    } else {
        format!(" --endpoints {}", endpoints.join(","))
    };
    let mut etcdctl = format!("--endpoints={}", endpoints[0]);
    if let Some(certs) = certs {
        println!(
            "\nMutual TLS on both ports; certificates in {}",
            opts.data_dir.join("certs").display()
        );
        println!("  client certificate CN: {CLIENT_CN} (with auth enabled, a request without a token runs as this user)");
        flag = format!("{flag} {}", certs.client_flags());
        etcdctl = format!("{etcdctl} {}", certs.client_flags());
    }
    println!("\nTry (in another terminal):");
    println!("  cargo run --release -p raftkv -- put{flag} greeting hello");
    println!("  cargo run --release -p raftkv -- get{flag} greeting");
    println!("  cargo run --release -p raftkv -- status{flag}");
    println!("  ETCDCTL_API=3 etcdctl {etcdctl} get greeting   # etcd's own CLI works too");
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
