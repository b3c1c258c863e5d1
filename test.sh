#!/usr/bin/env bash
# The one gate: formatting, lints, every test, and a simulator swarm.
# CI (.ci/run) runs exactly this; so should you before pushing.
set -euo pipefail
cd "$(dirname "$0")"
SEEDS="${RAFTKV_SWARM_SEEDS:-300}"
KV_SEEDS="${RAFTKV_KV_SEEDS:-200}"

# The etcd-client crate (a dev-dependency: tests/etcd_client.rs) generates its gRPC code
# with `protoc` from PATH or $PROTOC. Without either, use the protoc that the
# protoc-bin-vendored crate (a build dependency of our `proto` crate) ships.
if [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null; then
  cargo fetch -q
  case "$(uname -m)" in
    x86_64) platform=linux-x86_64 ;;
    aarch64) platform=linux-aarch_64 ;;
    *) platform=unknown ;;
  esac
  vendored=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/protoc-bin-vendored-"$platform"-*/bin/protoc 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$vendored" ] || [ ! -x "$vendored" ]; then
    echo "error: no protoc: the etcd-client tests need one. Install it (apt-get install" \
      "protobuf-compiler) or set PROTOC to a protoc binary (none found from the" \
      "protoc-bin-vendored crate for $(uname -m) under ${CARGO_HOME:-$HOME/.cargo}/registry/src)." >&2
    exit 1
  fi
  export PROTOC="$vendored"
  echo "== using protoc from protoc-bin-vendored: $PROTOC"
fi

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
