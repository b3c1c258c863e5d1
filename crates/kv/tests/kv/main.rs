//! Integration tests of the kv state machine, one binary to keep link time
//! down: etcd semantics, sessions, codec, snapshots and a model-based
//! property test.

mod auth;
mod codec;
mod common;
mod etcd;
mod lease_watch;
mod members;
mod model;
mod quota;
mod sessions;
mod snapshot;
