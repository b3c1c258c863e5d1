#!/usr/bin/env bash
# The one gate: formatting, lints, every test, and a simulator swarm.
# CI (.ci/run) runs exactly this; so should you before pushing.
set -euo pipefail
cd "$(dirname "$0")"
SEEDS="${RAFTKV_SWARM_SEEDS:-300}"
KV_SEEDS="${RAFTKV_KV_SEEDS:-200}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --release
echo "== simulator swarm: $SEEDS seeds (raft workload)"
cargo run --release -q -p sim -- --seeds "$SEEDS"
echo "== simulator swarm: $KV_SEEDS seeds (kv workload, every history checked for linearizability)"
cargo run --release -q -p sim -- --seeds "$KV_SEEDS" --workload kv
