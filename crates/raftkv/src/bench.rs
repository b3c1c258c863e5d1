//! `raftkv bench`: a load generator over etcd's v3 API, so the same tool measures raftkv
//! and a real etcd. Prints throughput and latency percentiles, and can write JSON and an
//! SVG latency histogram.
//!
//! With `--user` every request carries the user's token, renewed once when a member
//! refuses it as invalid. A request the cluster refuses for a reason every other
//! request would meet too (no or a wrong user, a permission, a bad argument) stops the
//! run at once with that reason, instead of counting thousands of the same failure.

use crate::exit::{self, Failure, OrExit};
use bytes::Bytes;
use client::{Client, ClientOptions, Token};
use proto::etcdserverpb as pb;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

/// What the benchmark does.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Puts of random keys.
    Put,
    /// Linearizable gets of random keys.
    Get,
    /// Serializable (local, possibly stale) gets.
    GetSerializable,
    /// Half puts, half linearizable gets.
    Mixed,
}

/// Benchmark settings.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Comma-separated client URLs (raftkv or etcd).
    #[arg(long, default_value = crate::DEFAULT_ENDPOINTS, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// The workload.
    #[arg(long, value_enum, default_value = "put")]
    workload: Workload,
    /// Concurrent clients (each one request at a time).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// gRPC connections the clients share.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Run for this many seconds...
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// ...or until this many requests completed (whichever first; 0: no count limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Send to every endpoint in turn instead of only the leader.
    #[arg(long)]
    spread: bool,
    /// Put every key once before measuring reads.
    #[arg(long)]
    preload: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the latency histogram as SVG here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// TLS for https:// endpoints, as etcdctl's flags.
    #[command(flatten)]
    tls: crate::tls_flags::ClientTlsArgs,
    /// --user and --password, as etcdctl's.
    #[command(flatten)]
    auth: crate::auth_flags::AuthArgs,
}

/// How long authenticating may take (and waiting for a password on standard input).
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// The token every benchmark client sends (none without --user, or when the cluster's
/// auth is off), shared: when a member refuses it as invalid, the first client to see
/// that authenticates again and the others take its new token.
struct SharedToken {
    /// The token now, and how many times it was renewed.
    current: RwLock<(u64, Option<Token>)>,
    /// The authenticated client that renews it; `None` without --user.
    renewer: tokio::sync::Mutex<Option<Client>>,
}

impl SharedToken {
    /// Authenticates with --user on `endpoints`, as etcdctl does before a command.
    async fn new(a: &BenchArgs, tls: Option<&tls::ClientTls>) -> Result<SharedToken, Failure> {
        let credentials = a.auth.credentials(AUTH_TIMEOUT)?;
        let renewer = match credentials {
            None => None,
            Some(credentials) => {
                let opts = ClientOptions {
                    deadline: AUTH_TIMEOUT,
                    exactly_once: false,
                    credentials: Some(credentials),
                    ..ClientOptions::default()
                };
                let mut c = Client::connect_tls(&a.endpoints, opts, tls).or_exit(exit::BAD_ARGS)?;
                crate::authenticate(&mut c).await?;
                Some(c)
            }
        };
        let token = renewer.as_ref().and_then(|c| c.token().cloned());
        Ok(SharedToken {
            current: RwLock::new((0, token)),
            renewer: tokio::sync::Mutex::new(renewer),
        })
    }

    /// `message` as a request with the token; and the token's renewal count.
    fn request<M>(&self, message: M) -> (tonic::Request<M>, u64) {
        let mut request = tonic::Request::new(message);
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        if let Some(token) = &current.1 {
            client::attach_token(&mut request, token);
        }
        (request, current.0)
    }

    /// A new token in place of renewal `seen`, unless another client renewed it since.
    async fn renew(&self, seen: u64) -> Result<(), tonic::Status> {
        let mut renewer = self.renewer.lock().await;
        if self.current.read().unwrap_or_else(|e| e.into_inner()).0 != seen {
            return Ok(());
        }
        let Some(c) = renewer.as_mut() else { return Ok(()) };
        let unauthenticated =
            |e: client::ClientError| tonic::Status::unauthenticated(e.to_string());
        c.authenticate_again().await.map_err(unauthenticated)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (seen + 1, c.token().cloned());
        Ok(())
    }
}

/// One benchmark request.
#[derive(Clone)]
enum Op {
    Put(pb::PutRequest),
    Range(pb::RangeRequest),
}

/// Sends `op` with the shared token; a token refused as invalid is renewed and the
/// request sent again, once.
async fn send(
    kv: &mut KvClient<Channel>,
    token: &SharedToken,
    op: &Op,
) -> Result<(), tonic::Status> {
    let mut renewed = false;
    loop {
        let answer = match op.clone() {
            Op::Put(m) => {
                let (request, seen) = token.request(m);
                (kv.put(request).await.map(drop), seen)
            }
            Op::Range(m) => {
                let (request, seen) = token.request(m);
                (kv.range(request).await.map(drop), seen)
            }
        };
        match answer {
            (Err(s), seen) if client::is_invalid_token(&s) && !renewed => {
                renewed = true;
                token.renew(seen).await?;
            }
            (answer, _) => return answer,
        }
    }
}

/// Whether every other request would be refused the same way, so the run stops: no or a
/// wrong user (etcd's InvalidArgument "user name is empty", Unauthenticated "invalid
/// auth token" after a renewal), a missing permission, a request etcd will not take.
fn stops_the_run(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated)
}

/// The one line a refusal that stopped the run prints: etcd's reason, and what to do.
fn stopped_by(status: &tonic::Status, done: u64) -> String {
    let what_to_do = match status.code() {
        Code::InvalidArgument if status.message().contains("user name is empty") => {
            "; auth is enabled on the cluster: pass --user NAME:PASSWORD"
        }
        Code::PermissionDenied => "; give --user a role that may read and write the bench/ keys",
        Code::Unauthenticated => "; check --user and its password",
        _ => "",
    };
    format!(
        "bench stopped at the first refused request, after {done} successful ones: {} ({:?}){what_to_do}",
        status.message(),
        status.code()
    )
}

/// What one run measured.
struct Results {
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// The refusal that stopped the run ([`stops_the_run`]), if one did.
    stopped_by: Option<tonic::Status>,
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The endpoint whose member says it leads (over TLS for an `https://` one).
async fn find_leader(endpoints: &[String], tls: Option<&tls::ClientTls>) -> Option<String> {
    for e in endpoints {
        let Ok(ch) = client::channel(e, tls) else { continue };
        let Ok(s) = MaintenanceClient::new(ch).status(pb::StatusRequest {}).await else { continue };
        let s = s.into_inner();
        if s.leader != 0 && s.header.as_ref().is_some_and(|h| h.member_id == s.leader) {
            return Some(e.clone());
        }
    }
    None
}

fn key_of(i: u64) -> Bytes {
    Bytes::from(format!("bench/{i:012}"))
}

/// SplitMix64, so every client walks its own reproducible key sequence.
fn next_rand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs the benchmark.
pub async fn run(a: BenchArgs) -> Result<(), Failure> {
    if a.clients == 0 || a.connections == 0 || a.keys == 0 {
        return Err("--clients, --connections and --keys must be at least 1".into());
    }
    let tls = a.tls.client_tls().or_exit(exit::BAD_ARGS)?;
    let token = Arc::new(SharedToken::new(&a, tls.as_ref()).await?);
    let targets = if a.spread {
        a.endpoints.clone()
    } else {
        let leader = find_leader(&a.endpoints, tls.as_ref()).await;
        vec![leader.ok_or("no leader found at --endpoints")?]
    };
    let mut channels = Vec::new();
    for k in 0..a.connections {
        let url = &targets[k % targets.len()];
        let ch = client::channel(url, tls.as_ref()).map_err(|e| format!("{url}: {e}"))?;
        // Connected now, so an unreachable member is an error here, not one per request.
        MaintenanceClient::new(ch.clone())
            .status(pb::StatusRequest {})
            .await
            .map_err(|e| format!("connecting to {url}: {}", e.message()))?;
        channels.push(ch);
    }
    let value = Bytes::from(vec![b'v'; a.value_size]);
    if a.preload {
        preload(&channels, &token, a.keys, &value, a.clients).await?;
    }
    let results = measure(&a, &channels, &token, value).await;
    if let Some(refusal) = &results.stopped_by {
        return Err(stopped_by(refusal, results.ops).into());
    }
    Ok(report(&a, &targets, &results)?)
}

async fn preload(
    channels: &[Channel],
    token: &Arc<SharedToken>,
    keys: u64,
    value: &Bytes,
    clients: usize,
) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        let (next, token) = (next.clone(), token.clone());
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok::<(), String>(());
                }
                let req =
                    pb::PutRequest { key: key_of(i), value: value.clone(), ..Default::default() };
                send(&mut kv, &token, &Op::Put(req))
                    .await
                    .map_err(|e| format!("preload: {} ({:?})", e.message(), e.code()))?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn measure(
    a: &BenchArgs,
    channels: &[Channel],
    token: &Arc<SharedToken>,
    value: Bytes,
) -> Results {
    let stop = Arc::new(AtomicBool::new(false));
    let refusal: Arc<OnceLock<tonic::Status>> = Arc::new(OnceLock::new());
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.duration_secs);
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        let (stop, done, errors, value) =
            (stop.clone(), done.clone(), errors.clone(), value.clone());
        let (token, refusal) = (token.clone(), refusal.clone());
        let (workload, keys, count) = (a.workload, a.keys, a.count);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut rng = 0x5EED ^ (c as u64).wrapping_mul(0x9E37_79B9);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let r = next_rand(&mut rng);
                let key = key_of(r % keys);
                let put = match workload {
                    Workload::Put => true,
                    Workload::Mixed => r >> 63 == 1,
                    _ => false,
                };
                let op = if put {
                    Op::Put(pb::PutRequest { key, value: value.clone(), ..Default::default() })
                } else {
                    let serializable = workload == Workload::GetSerializable;
                    Op::Range(pb::RangeRequest { key, serializable, ..Default::default() })
                };
                let t0 = Instant::now();
                let answer = send(&mut kv, &token, &op).await;
                let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                if let Err(status) = &answer {
                    if stops_the_run(status) {
                        let _ = refusal.set(status.clone());
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                if answer.is_ok() {
                    lat.push(us);
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if count > 0 && n >= count {
                        stop.store(true, Ordering::Relaxed);
                    }
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let progress = {
        let (stop, done, quiet) = (stop.clone(), done.clone(), a.quiet);
        tokio::spawn(async move {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = done.load(Ordering::Relaxed);
                if !quiet {
                    let secs = started.elapsed().as_secs_f64();
                    eprint!("\r  {secs:5.1}s  {n:>9} ops  {:>8} ops/s   ", n - last);
                }
                last = n;
            }
        })
    };
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    // End the progress line, if one was drawn (the first comes after a second): a run a
    // refusal stopped at once has only its error line on stderr.
    if !a.quiet && elapsed >= Duration::from_secs(1) {
        eprintln!();
    }
    latencies_us.sort_unstable();
    Results {
        ops: latencies_us.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latencies_us,
        stopped_by: refusal.get().cloned(),
    }
}

fn report(a: &BenchArgs, targets: &[String], r: &Results) -> Result<(), String> {
    let ops_s = r.ops as f64 / r.elapsed.as_secs_f64();
    let ms = |us: u32| us as f64 / 1000.0;
    let l = &r.latencies_us;
    let (p50, p90, p99, p999) =
        (percentile(l, 50.0), percentile(l, 90.0), percentile(l, 99.0), percentile(l, 99.9));
    println!(
        "{:?} clients={} conns={} keys={} value={}B: {} ops in {:.1}s = {:.0} ops/s; latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}; errors {}",
        a.workload,
        a.clients,
        a.connections,
        a.keys,
        a.value_size,
        r.ops,
        r.elapsed.as_secs_f64(),
        ops_s,
        ms(p50),
        ms(p90),
        ms(p99),
        ms(p999),
        ms(l.last().copied().unwrap_or(0)),
        r.errors
    );
    if let Some(path) = &a.json {
        let json = format!(
            "{{\"workload\":\"{:?}\",\"targets\":{:?},\"clients\":{},\"connections\":{},\"keys\":{},\"value_size\":{},\"ops\":{},\"errors\":{},\"seconds\":{:.3},\"ops_per_sec\":{:.1},\"latency_ms\":{{\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"max\":{:.3}}}}}\n",
            a.workload, targets, a.clients, a.connections, a.keys, a.value_size, r.ops, r.errors,
            r.elapsed.as_secs_f64(), ops_s, ms(p50), ms(p90), ms(p99), ms(p999),
            ms(l.last().copied().unwrap_or(0))
        );
        std::fs::write(path, json).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = &a.svg {
        std::fs::write(path, svg(l, &format!("{:?}, {} clients", a.workload, a.clients)))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// A latency histogram on log-spaced buckets (10 per decade) as a standalone SVG.
fn svg(sorted_us: &[u32], title: &str) -> String {
    let mut buckets = vec![0u64; 70]; // 1 µs .. 10 s
    for &us in sorted_us {
        let b = ((us.max(1) as f64).log10() * 10.0) as usize;
        buckets[b.min(69)] += 1;
    }
    let max = buckets.iter().copied().max().unwrap_or(1).max(1) as f64;
    let (w, h, left, bottom) = (760.0, 300.0, 50.0, 40.0);
    let bw = (w - left) / buckets.len() as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">",
        w + 20.0,
        h + bottom + 20.0
    );
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"14\" font-size=\"13\">latency histogram: {title} (n={})</text>",
        sorted_us.len()
    );
    for (i, c) in buckets.iter().enumerate() {
        let bh = (*c as f64 / max) * (h - 30.0);
        let x = left + i as f64 * bw;
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#4a7ab8\"/>",
            h - bh,
            bw - 1.0
        );
    }
    for (d, label) in ["1µs", "10µs", "100µs", "1ms", "10ms", "100ms", "1s"].iter().enumerate() {
        let x = left + (d * 10) as f64 * bw;
        let _ = write!(s, "<text x=\"{x:.1}\" y=\"{}\">{label}</text>", h + 15.0);
    }
    s.push_str("</svg>\n");
    s
}
