//! `raftkv bench`: a load generator over etcd's v3 API, so the same tool measures raftkv
//! and a real etcd. Prints throughput and latency percentiles, and can write JSON and an
//! SVG latency histogram.

use bytes::Bytes;
use proto::etcdserverpb as pb;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

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
}

/// What one run measured.
struct Results {
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
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
pub async fn run(a: BenchArgs) -> Result<(), String> {
    if a.clients == 0 || a.connections == 0 || a.keys == 0 {
        return Err("--clients, --connections and --keys must be at least 1".into());
    }
    let tls = a.tls.client_tls()?;
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
        preload(&channels, a.keys, &value, a.clients).await?;
    }
    let results = measure(&a, &channels, value).await;
    report(&a, &targets, &results)
}

async fn preload(
    channels: &[Channel],
    keys: u64,
    value: &Bytes,
    clients: usize,
) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        let next = next.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok::<(), String>(());
                }
                let req =
                    pb::PutRequest { key: key_of(i), value: value.clone(), ..Default::default() };
                kv.put(req).await.map_err(|e| format!("preload: {}", e.message()))?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn measure(a: &BenchArgs, channels: &[Channel], value: Bytes) -> Results {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.duration_secs);
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        let (stop, done, errors, value) =
            (stop.clone(), done.clone(), errors.clone(), value.clone());
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
                let t0 = Instant::now();
                let ok = if put {
                    let req = pb::PutRequest { key, value: value.clone(), ..Default::default() };
                    kv.put(req).await.is_ok()
                } else {
                    let serializable = workload == Workload::GetSerializable;
                    let req = pb::RangeRequest { key, serializable, ..Default::default() };
                    kv.range(req).await.is_ok()
                };
                let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                if ok {
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
    if !a.quiet {
        eprintln!();
    }
    latencies_us.sort_unstable();
    Results {
        ops: latencies_us.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latencies_us,
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
