//! A throughput benchmark: a fault-free three-node cluster with in-memory disks under heavy
//! proposal load. It measures the core plus the simulator, per second of CPU time.

use crate::cluster::{Cluster, ClusterConfig};
use crate::disk::DiskConfig;
use crate::network::NetConfig;
use raft::{NodeId, ProposeError};
use std::time::{Duration, Instant};

/// Proposals made per simulated millisecond.
const PROPOSALS_PER_MS: u64 = 20;
/// Payload size of each proposal.
const PAYLOAD_BYTES: usize = 64;

/// What a benchmark run did.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Simulated time covered.
    pub sim_time_us: u64,
    /// Proposals made.
    pub proposals: u64,
    /// Commands committed.
    pub committed: u64,
    /// Events processed.
    pub events: u64,
    /// CPU time of the benchmark thread (wall time where the OS does not say).
    pub cpu: Duration,
    /// True if `cpu` is wall time.
    pub cpu_is_wall_time: bool,
}

impl BenchReport {
    /// Committed proposals per CPU second.
    pub fn committed_per_cpu_second(&self) -> f64 {
        self.committed as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
}

/// CPU time of the calling thread, from Linux's schedstat.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs the benchmark for `sim_duration_us` of simulated time.
pub fn run_bench(sim_duration_us: u64, seed: u64) -> BenchReport {
    let mut cfg = ClusterConfig::new(3, seed);
    cfg.disk = DiskConfig::instant();
    cfg.net = NetConfig { delay_min_us: 100, delay_max_us: 300, ..NetConfig::reliable() };
    cfg.clock_drift = 0.0;
    cfg.trace = false;
    cfg.recent_events_max = 0;
    let mut c = Cluster::scripted(cfg);
    let (cpu0, wall0) = (thread_cpu_time(), Instant::now());
    let mut leader: NodeId = 1;
    let mut proposals = 0u64;
    let payload = vec![0xAB; PAYLOAD_BYTES];
    let end = c.now_us() + sim_duration_us;
    while c.now_us() < end {
        let next = c.now_us() + 1_000;
        c.run_until_us(next);
        for _ in 0..PROPOSALS_PER_MS {
            let mut data = payload.clone();
            data[..8].copy_from_slice(&proposals.to_le_bytes());
            match c.propose_to(leader, data) {
                Ok(_) => proposals += 1,
                Err(ProposeError::NotLeader { leader: Some(l) }) => leader = l,
                Err(_) => {
                    leader = leader % 3 + 1;
                    break;
                }
            }
        }
    }
    let (cpu, cpu_is_wall_time) = match (cpu0, thread_cpu_time()) {
        (Some(a), Some(b)) => (b.saturating_sub(a), false),
        _ => (wall0.elapsed(), true),
    };
    BenchReport {
        sim_time_us: sim_duration_us,
        proposals,
        committed: c.commands_committed(),
        events: c.events(),
        cpu,
        cpu_is_wall_time,
    }
}
