//! Wire definitions for raftkv: the gRPC services it serves and calls, as Rust types.
//!
//! # What is here
//!
//! - **etcd's v3 client API**, so `etcdctl` and etcd client libraries work against
//!   raftkv unchanged: [`etcdserverpb`] (services `etcdserverpb.KV`, `Watch`, `Lease`,
//!   `Cluster`, `Maintenance`, `Auth`), with [`mvccpb`] and [`authpb`] as the separate
//!   packages etcd has, plus the lock and election services [`v3lockpb`] and
//!   [`v3electionpb`]. Package, service, message and field names, field numbers and
//!   enum values follow etcd 3.5 (and the additive 3.6 fields), because the gRPC path
//!   (`/etcdserverpb.KV/Range`) and the field numbers are the compatibility contract.
//! - **raftkv's peer transport**, [`peer`] (package `raftkv.peer`): the Raft core's
//!   [`raft::Message`] on the wire, a `Hello` handshake that keeps members of different
//!   clusters apart, and a long-lived client stream of message batches per peer.
//! - **Conversions** between [`peer`] messages and the core's types, in
//!   [`peer_convert`]. Encoding cannot fail; decoding checks the shape the core relies
//!   on and returns a [`peer_convert::ConvertError`] instead of panicking, because the
//!   bytes come from the network.
//!
//! # How it is generated
//!
//! `build.rs` runs `tonic-prost-build` over the `.proto` files in `proto/` with the
//! `protoc` binary shipped by the `protoc-bin-vendored` crate, so no system `protoc`
//! is needed. Every protobuf `bytes` field becomes [`bytes::Bytes`]. Both clients
//! (`*_client::*Client`) and servers (`*_server::*Server` plus the trait to implement)
//! are generated. The `connect(url)` helpers on clients exist only with the crate's
//! `transport` feature; without it, build a client with `Client::new(channel)`.
//!
//! The generated modules are exempt from the workspace's doc and clippy lints: their
//! docs are the `.proto` comments, and their shape is the generator's.

// Generated code: docs come from the .proto comments (not every item has one), and
// its style is the generator's, not ours.
macro_rules! generated_module {
    ($(#[$doc:meta])* $name:ident, $file:literal) => {
        $(#[$doc])*
        #[allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
        #[allow(rustdoc::bare_urls, rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
        pub mod $name {
            include!(concat!(env!("OUT_DIR"), "/", $file));
        }
    };
    // etcd's packages: with the `json` feature, also the serde impls pbjson-build made.
    ($(#[$doc:meta])* $name:ident, $file:literal, json $serde:literal) => {
        $(#[$doc])*
        #[allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
        #[allow(rustdoc::bare_urls, rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
        pub mod $name {
            include!(concat!(env!("OUT_DIR"), "/", $file));
            #[cfg(feature = "json")]
            include!(concat!(env!("OUT_DIR"), "/", $serde));
        }
    };
}

generated_module!(
    /// etcd's multi-version key/value records (`mvccpb.KeyValue`, `mvccpb.Event`).
    mvccpb,
    "mvccpb.rs",
    json "mvccpb.serde.rs"
);
generated_module!(
    /// etcd's auth records (`authpb.Permission`, `authpb.UserAddOptions`, ...).
    authpb,
    "authpb.rs",
    json "authpb.serde.rs"
);
generated_module!(
    /// etcd's v3 client API: messages, and a client and server per service
    /// (e.g. [`etcdserverpb::kv_server::KvServer`], [`etcdserverpb::kv_client::KvClient`]).
    etcdserverpb,
    "etcdserverpb.rs",
    json "etcdserverpb.serde.rs"
);
generated_module!(
    /// etcd's lock service `v3lockpb.Lock`.
    v3lockpb,
    "v3lockpb.rs",
    json "v3lockpb.serde.rs"
);
generated_module!(
    /// etcd's election service `v3electionpb.Election`.
    v3electionpb,
    "v3electionpb.rs",
    json "v3electionpb.serde.rs"
);
generated_module!(
    /// raftkv's peer transport, package `raftkv.peer`: service `Peer`
    /// ([`peer::peer_server::PeerServer`], [`peer::peer_client::PeerClient`]) and the
    /// wire form of the Raft core's messages.
    peer,
    "raftkv.peer.rs"
);

generated_module!(
    /// raftkv's session service, package `raftkv.session`: exactly-once writes for our
    /// own client ([`session::session_server::SessionServer`]).
    session,
    "raftkv.session.rs"
);

pub mod peer_convert;

pub use peer_convert::ConvertError;

/// Version of the `raftkv.peer` protocol this build speaks, for `HelloRequest` and
/// `HelloResponse`. Bump it on a change a peer of the previous version cannot read.
pub const PEER_PROTOCOL_VERSION: u32 = 2;

/// A status's message and its causes, each once: tonic's "transport error" says nothing
/// of a refused connection or a failed handshake; its sources do. Shared by the client
/// and the server's joining path.
pub fn status_with_causes(s: &tonic::Status) -> String {
    let mut text = s.message().to_string();
    let mut cause = std::error::Error::source(s);
    // Bounded: error chains are short, and a cyclic one must not loop.
    for _ in 0..8 {
        let Some(c) = cause else { break };
        let line = c.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use tonic::server::NamedService;

    /// etcd clients call `/etcdserverpb.KV/Range` and so on: the fully qualified
    /// service names are the compatibility contract, whatever the Rust names are.
    #[test]
    fn service_names_match_etcd() {
        use crate::etcdserverpb::*;
        type Unused = ();
        let names = [
            <kv_server::KvServer<Unused> as NamedService>::NAME,
            watch_server::SERVICE_NAME,
            lease_server::SERVICE_NAME,
            cluster_server::SERVICE_NAME,
            maintenance_server::SERVICE_NAME,
            auth_server::SERVICE_NAME,
            crate::v3lockpb::lock_server::SERVICE_NAME,
            crate::v3electionpb::election_server::SERVICE_NAME,
            crate::peer::peer_server::SERVICE_NAME,
        ];
        assert_eq!(
            names,
            [
                "etcdserverpb.KV",
                "etcdserverpb.Watch",
                "etcdserverpb.Lease",
                "etcdserverpb.Cluster",
                "etcdserverpb.Maintenance",
                "etcdserverpb.Auth",
                "v3lockpb.Lock",
                "v3electionpb.Election",
                "raftkv.peer.Peer",
            ]
        );
    }

    /// Spot checks that field numbers match etcd's where they are easiest to get wrong:
    /// the oneofs, the jump to 64 in `Compare`, the gap before 11 in `WatchResponse`.
    /// The expected bytes are protobuf tags written out by hand: (number << 3) | wire type.
    #[test]
    fn etcd_field_numbers_on_the_wire() {
        use crate::etcdserverpb::*;
        use bytes::Bytes;
        use prost::Message as _;

        let compare = Compare {
            target: compare::CompareTarget::Mod as i32,
            range_end: Bytes::from_static(b"z"),
            target_union: Some(compare::TargetUnion::ModRevision(5)),
            ..Default::default()
        };
        // target = 2 (varint), mod_revision = 6 (varint), range_end = 64 (bytes).
        assert_eq!(compare.encode_to_vec(), [0x10, 2, 0x30, 5, 0x82, 0x04, 1, b'z']);

        let op =
            RequestOp { request: Some(request_op::Request::RequestTxn(TxnRequest::default())) };
        assert_eq!(op.encode_to_vec(), [0x22, 0]); // request_txn = 4

        let watch = WatchRequest {
            request_union: Some(watch_request::RequestUnion::ProgressRequest(
                WatchProgressRequest {},
            )),
        };
        assert_eq!(watch.encode_to_vec(), [0x1a, 0]); // progress_request = 3

        let events = WatchResponse {
            events: vec![crate::mvccpb::Event {
                r#type: crate::mvccpb::event::EventType::Delete as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(events.encode_to_vec(), [0x5a, 2, 0x08, 1]); // events = 11, type = 1

        let lease = LeaseGrantRequest { ttl: 10, id: 7 };
        assert_eq!(lease.encode_to_vec(), [0x08, 10, 0x10, 7]); // TTL = 1, ID = 2
    }
}
