//! Automatic compaction of the key history (`--auto-compaction-mode` and
//! `--auto-compaction-retention`), as etcd 3.4's compactor does it.
//!
//! Every member runs the loop, but only the leader proposes: on the others it is
//! paused (etcd pauses its compactor when the member loses leadership). The
//! compaction goes through the log as a normal `Compact` command, so every member
//! compacts at the same revision; a revision that is already compacted counts as
//! done, as in etcd.
//!
//! * **periodic** (retention a duration): every tenth of the period (at most 6 minutes)
//!   the loop records the current revision, keeping the last `period / step + 1`
//!   samples, so the oldest is the revision of one period ago. After a first full
//!   period it compacts to that revision, then again every period (at most every
//!   hour); a failed compaction is retried at the next step.
//! * **revision** (retention a count): every check interval (5 minutes in etcd 3.4)
//!   it compacts to the current revision minus the retention, unless that is not
//!   positive or is the revision it compacted last.

use crate::config::AutoCompaction;
use crate::runtime::NodeHandle;
use kv::{Command, KvError, Op, Response};
use node::{Request, RequestError};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Runs the compactor for `mode` until the node stops.
pub async fn run(node: NodeHandle, mode: AutoCompaction, revision_interval: Duration) {
    match mode {
        AutoCompaction::Periodic(period) => periodic(node, period).await,
        AutoCompaction::Revision(retention) => revision(node, retention, revision_interval).await,
    }
}

/// What a compaction attempt came to.
enum Outcome {
    /// Compacted (or already compacted at or past that revision).
    Done,
    /// This member does not lead (any more): nothing was proposed, or it was lost.
    NotLeader,
    /// It failed; try again later.
    Failed(String),
}

/// The current revision, if this member leads right now; `None` if it stopped.
async fn leader_revision(node: &NodeHandle) -> Option<(bool, u64)> {
    node.status().await.map(|s| (s.is_leader, s.revision))
}

async fn compact(node: &NodeHandle, revision: u64) -> Outcome {
    let cmd = Command::new(Op::Compact { revision });
    match node.request(Request::Write(cmd)).await {
        Ok(Response::Compact(_)) | Ok(Response::Error(KvError::Compacted { .. })) => Outcome::Done,
        Ok(Response::Error(e)) => Outcome::Failed(e.to_string()),
        Ok(other) => Outcome::Failed(format!("unexpected answer {other:?}")),
        Err(RequestError::NotLeader { .. }) => Outcome::NotLeader,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

async fn periodic(node: NodeHandle, period: Duration) {
    let compact_interval = period.min(Duration::from_secs(3600));
    let step = (compact_interval / 10).max(Duration::from_millis(1));
    let samples_max = (period.as_nanos() / step.as_nanos()) as usize + 1;
    let mut revisions: VecDeque<u64> = VecDeque::with_capacity(samples_max + 1);
    let mut last_success = Instant::now();
    let mut base_interval = period;
    loop {
        let Some((is_leader, current)) = leader_revision(&node).await else { return };
        revisions.push_back(current);
        if revisions.len() > samples_max {
            revisions.pop_front(); // the front is the revision of one period ago
        }
        tokio::time::sleep(step).await;
        if !is_leader || last_success.elapsed() < base_interval {
            continue;
        }
        base_interval = compact_interval;
        let revision = revisions[0];
        let period_text = format!("{period:?}");
        tracing::info!(revision, compact_period = %period_text, "starting auto periodic compaction");
        match compact(&node, revision).await {
            Outcome::Done => {
                tracing::info!(revision, compact_period = %period_text, "completed auto periodic compaction");
                last_success = Instant::now();
            }
            Outcome::NotLeader => {}
            Outcome::Failed(error) => tracing::warn!(
                revision,
                compact_period = %period_text,
                retry_interval = ?step,
                %error,
                "failed auto periodic compaction"
            ),
        }
    }
}

async fn revision(node: NodeHandle, retention: u64, interval: Duration) {
    let mut last = 0u64;
    loop {
        tokio::time::sleep(interval).await;
        let Some((is_leader, current)) = leader_revision(&node).await else { return };
        if !is_leader {
            continue;
        }
        let revision = current.saturating_sub(retention);
        if revision == 0 || revision == last {
            continue;
        }
        tracing::info!(
            revision,
            revision_compaction_retention = retention,
            "starting auto revision compaction"
        );
        match compact(&node, revision).await {
            Outcome::Done => {
                last = revision;
                tracing::info!(
                    revision,
                    revision_compaction_retention = retention,
                    "completed auto revision compaction"
                );
            }
            Outcome::NotLeader => {}
            Outcome::Failed(error) => tracing::warn!(
                revision,
                revision_compaction_retention = retention,
                retry_interval = ?interval,
                %error,
                "failed auto revision compaction"
            ),
        }
    }
}
