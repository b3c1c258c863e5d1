//! Named deterministic scenarios: every combination of network (reliable, unreliable,
//! long-delay) x crashes (none, or crash events that often take every member down) x
//! partitions (none, or every kind) x snapshots (off, or frequent), for both workloads.
//!
//! A scenario is a fixed seed with fixed parameters: the seed's own draws (disks, clock
//! drift, watchers, leases, auth...) and then the scenario's four dimensions and a
//! fixed cluster shape written over them. Membership changes are on in every scenario
//! (a spare member and an operator), and kv clients never give up, so each scenario
//! ends with every operation's outcome known. Replay one with
//! `cargo run --release -p sim -- --scenario NAME [--workload kv] -v`.

use crate::faults::FaultParams;
use crate::kv::swarm::PATIENT;
use crate::kv::{KvOutcome, KvParams};
use crate::network::{NetConfig, LONG_DELAY_REPLY_SHARE};
use crate::swarm::{SeedOutcome, SwarmParams, ALL_KINDS};

/// The network of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// No loss, 0.2-2 ms delays.
    Reliable,
    /// [`NetConfig::unreliable`]: loss, duplicates, reordering.
    Unreliable,
    /// [`NetConfig::long_delay`]: most replies 0.2-2 s late, to the very end.
    LongDelay,
}

impl NetMode {
    const ALL: [NetMode; 3] = [NetMode::Reliable, NetMode::Unreliable, NetMode::LongDelay];

    fn name(self) -> &'static str {
        match self {
            NetMode::Reliable => "reliable",
            NetMode::Unreliable => "unreliable",
            NetMode::LongDelay => "long_delay",
        }
    }

    fn config(self) -> NetConfig {
        match self {
            NetMode::Reliable => NetConfig::reliable(),
            NetMode::Unreliable => NetConfig::unreliable(),
            NetMode::LongDelay => NetConfig::long_delay(LONG_DELAY_REPLY_SHARE),
        }
    }
}

/// One combination of the four dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// The network.
    pub net: NetMode,
    /// Crash events (half of them take every member down) and power cuts during syncs.
    pub crash_all: bool,
    /// Network faults of every kind.
    pub partitions: bool,
    /// Frequent snapshots (compaction, InstallSnapshot); off: the log is never compacted
    /// (a joining kv member still gets the one snapshot it needs to join).
    pub snapshots: bool,
}

/// Founding voters in every scenario (one spare member comes on top).
const VOTERS: usize = 5;

/// A workload's pace in the scenarios: the safety phase's length and how often and how
/// long each dimension's faults strike. The dimensions a scenario turns on are the same
/// for both workloads ([`Scenario::faults`]); only the pace differs.
struct Pace {
    safety_us: u64,
    partition_every_us: u64,
    partition_us: u64,
    crash_every_us: u64,
    crash_max_at_once: usize,
    restart_us: u64,
    membership_every_us: u64,
}

/// The raft workload's pace: a 40 s safety phase, a membership move every ~3 s.
const RAFT_PACE: Pace = Pace {
    safety_us: 40_000_000,
    partition_every_us: 5_000_000,
    partition_us: 2_000_000,
    crash_every_us: 8_000_000,
    crash_max_at_once: VOTERS + 1,
    restart_us: 2_000_000,
    membership_every_us: 3_000_000,
};

/// The kv workload's pace: a 15 s safety phase, a membership change every ~2 s.
const KV_PACE: Pace = Pace {
    safety_us: 15_000_000,
    partition_every_us: 3_000_000,
    partition_us: 1_500_000,
    crash_every_us: 4_000_000,
    crash_max_at_once: VOTERS,
    restart_us: 1_000_000,
    membership_every_us: 2_000_000,
};

impl Scenario {
    /// The 24 scenarios, in a fixed order (their seeds follow it).
    pub fn all() -> Vec<Scenario> {
        let mut all = Vec::new();
        for net in NetMode::ALL {
            for crash_all in [false, true] {
                for partitions in [false, true] {
                    for snapshots in [false, true] {
                        all.push(Scenario { net, crash_all, partitions, snapshots });
                    }
                }
            }
        }
        all
    }

    /// Its name, e.g. `long_delay_crash_all_partitions_no_snapshots`.
    pub fn name(&self) -> String {
        let no = |on: bool| if on { "" } else { "no_" };
        format!(
            "{}_{}_{}partitions_{}snapshots",
            self.net.name(),
            if self.crash_all { "crash_all" } else { "no_crash" },
            no(self.partitions),
            no(self.snapshots)
        )
    }

    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::all().into_iter().find(|s| s.name() == name)
    }

    /// Its fixed seed: 1 + its place in [`Scenario::all`].
    pub fn seed(&self) -> u64 {
        let place = Scenario::all().iter().position(|s| s == self).expect("listed");
        1 + place as u64
    }

    /// The command that replays it with its event trace.
    pub fn replay_command(&self, kv: bool) -> String {
        let workload = if kv { " --workload kv" } else { "" };
        format!("cargo run --release -p sim -- --scenario {}{workload} -v", self.name())
    }

    /// The safety phase's faults at `pace`: partitions of every kind if on, crash events
    /// (half of them taking every member down) if on.
    fn faults(&self, pace: &Pace) -> FaultParams {
        FaultParams {
            partition_interval_us: self.partitions.then_some(pace.partition_every_us),
            partition_duration_us: pace.partition_us,
            partition_kinds: ALL_KINDS.to_vec(),
            crash_interval_us: self.crash_all.then_some(pace.crash_every_us),
            crash_max_at_once: pace.crash_max_at_once,
            all_crash: 0.5,
            restart_delay_us: pace.restart_us,
            safety_duration_us: pace.safety_us,
        }
    }

    /// Power cuts during syncs come with the crash dimension.
    fn crash_during_write(&self) -> f64 {
        if self.crash_all {
            0.002
        } else {
            0.0
        }
    }

    /// The raft workload's parameters: 5 voters and a spare node, 3 clients at 20
    /// proposals/s, [`RAFT_PACE`].
    pub fn raft_params(&self) -> SwarmParams {
        let mut p = SwarmParams::from_seed(self.seed());
        let c = &mut p.cluster;
        c.voters = VOTERS;
        c.nodes = VOTERS + 1;
        c.pre_vote = true;
        c.check_quorum = true;
        c.net = self.net.config();
        c.crash_during_write = self.crash_during_write();
        c.compact_threshold_entries = self.snapshots.then_some(50);
        c.snapshot_padding_bytes = 1_000;
        c.snapshot_chunk_bytes = 512;
        p.clients = 3;
        p.propose_interval_us = 150_000;
        p.faults = self.faults(&RAFT_PACE);
        p.membership_interval_us = Some(RAFT_PACE.membership_every_us);
        p
    }

    /// The kv workload's parameters: 5 members and a spare, 8 clients that never give up
    /// at ~400 ops/s over 5 keys, [`KV_PACE`].
    pub fn kv_params(&self) -> KvParams {
        let mut p = KvParams::from_seed(self.seed());
        let c = &mut p.cluster;
        c.members = VOTERS;
        c.spare_members = 1;
        c.net = self.net.config();
        c.crash_during_write = self.crash_during_write();
        c.snapshot_interval_entries = if self.snapshots { 30 } else { 1_000_000 };
        c.snapshot_chunk_bytes = 256;
        c.session_idle_entries_max = 100_000;
        c.clients = 8;
        c.keys = 5;
        c.think_us = 20_000;
        c.client_timeout_us = 500_000;
        c.op_deadline_us = PATIENT;
        if let Some((idx, us)) = c.slow_applier {
            c.slow_applier = Some((idx % VOTERS, us));
        }
        p.faults = self.faults(&KV_PACE);
        p.member_change_interval_us = Some(KV_PACE.membership_every_us);
        p
    }
}

/// What one run of a scenario did along its dimensions (see
/// [`Scenario::check_exercised`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exercised {
    /// Membership changes a leader accepted (raft) or the operator saw done (kv).
    pub membership_changes: u64,
    /// Members crashed.
    pub crashes: u64,
    /// Network faults cut.
    pub network_faults: u64,
    /// Snapshots taken.
    pub snapshots: u64,
}

impl From<&SeedOutcome> for Exercised {
    fn from(out: &SeedOutcome) -> Exercised {
        Exercised {
            membership_changes: out.conf_changes,
            crashes: out.crashes,
            network_faults: out.partitions,
            snapshots: out.snapshots,
        }
    }
}

impl From<&KvOutcome> for Exercised {
    fn from(out: &KvOutcome) -> Exercised {
        Exercised {
            membership_changes: out.stats.member_changes,
            crashes: out.stats.crashes,
            network_faults: out.partitions,
            snapshots: out.stats.snapshots_taken,
        }
    }
}

impl Scenario {
    /// A run of this scenario exercised what its name says: membership changes (on in
    /// every scenario), crashes exactly when `crash_all`, network faults when
    /// `partitions` (a raft run without them still cuts the split that follows some
    /// changes of voters), snapshots when `snapshots` (a kv run without them still
    /// snapshots once for each member that joins). The error names what is missing.
    pub fn check_exercised(&self, did: &Exercised) -> Result<(), String> {
        let mut missing = Vec::new();
        if did.membership_changes == 0 {
            missing.push("no membership change although membership is on".to_string());
        }
        if self.crash_all != (did.crashes > 0) {
            missing.push(format!("{} crashes with crash_all {}", did.crashes, self.crash_all));
        }
        if self.partitions && did.network_faults == 0 {
            missing.push("no network fault although partitions are on".to_string());
        }
        if self.snapshots && did.snapshots == 0 {
            missing.push("no snapshot although snapshots are on".to_string());
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!("scenario {} did not exercise its name: {}", self.name(), missing.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_parse_back() {
        let all = Scenario::all();
        assert_eq!(all.len(), 24);
        for (k, s) in all.iter().enumerate() {
            assert_eq!(Scenario::from_name(&s.name()), Some(*s));
            assert_eq!(s.seed(), 1 + k as u64);
        }
        assert_eq!(Scenario::from_name("reliable"), None);
    }
}
