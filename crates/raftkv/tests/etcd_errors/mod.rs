//! etcd's errors, compared through raw gRPC calls: every request here is refused by
//! etcd (or, next to a refused one, just accepted), and raftkv must answer each with
//! the same gRPC code and message. The transcript lines are `<case>: ok <summary>` or
//! `<case>: error <code> "<message>"`.
//!
//! Cases: request too large (etcd's 1.5 MiB limit, and gRPC's own limit above it), too
//! many operations in a txn (128, counted per level and shared with nested txns),
//! duplicate keys in a txn (including etcd 3.4's rules for nested txns), empty keys,
//! compacted and future revisions, unknown leases and too large TTLs.

use super::{Cluster, Log};
use proto::etcdserverpb as pb;
use proto::etcdserverpb::request_op::Request;
use proto::etcdserverpb::watch_request::RequestUnion;
use std::time::Duration;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// etcd's default `--max-request-bytes`: 1.5 MiB.
const REQUEST_BYTES_MAX: usize = 1536 * 1024;

/// etcd's gRPC message limit: `--max-request-bytes` and 512 KiB for gRPC's overhead.
const GRPC_MESSAGE_BYTES_MAX: usize = REQUEST_BYTES_MAX + 512 * 1024;

/// etcd's limit on the operations of one txn level (`--max-txn-ops`).
const TXN_OPS_MAX: usize = 128;

/// `ok` and what `show` says of the response, or the error's gRPC code and message.
fn outcome<T>(
    r: Result<tonic::Response<T>, tonic::Status>,
    show: impl FnOnce(T) -> String,
) -> String {
    match r {
        Ok(r) => format!("ok {}", show(r.into_inner())).trim_end().to_string(),
        Err(s) => format!("error {:?} {:?}", s.code(), s.message()),
    }
}

fn put(key: &str, value: Vec<u8>) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.into(),
        ..Default::default()
    }
}

fn put_op(key: &str) -> pb::RequestOp {
    pb::RequestOp { request: Some(Request::RequestPut(put(key, b"v".to_vec()))) }
}

fn del_op(key: &str, range_end: &str) -> pb::RequestOp {
    let del = pb::DeleteRangeRequest {
        key: key.as_bytes().to_vec().into(),
        range_end: range_end.as_bytes().to_vec().into(),
        ..Default::default()
    };
    pb::RequestOp { request: Some(Request::RequestDeleteRange(del)) }
}

fn range_op(range: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp { request: Some(Request::RequestRange(range)) }
}

/// A txn without compares: its success branch runs.
fn txn(success: Vec<pb::RequestOp>) -> pb::TxnRequest {
    pb::TxnRequest { compare: Vec::new(), success, failure: Vec::new() }
}

fn nested(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::RequestOp {
    let t = pb::TxnRequest { compare: Vec::new(), success, failure };
    pb::RequestOp { request: Some(Request::RequestTxn(t)) }
}

fn puts(prefix: &str, n: usize) -> Vec<pb::RequestOp> {
    (0..n).map(|i| put_op(&format!("{prefix}{i}"))).collect()
}

fn range(key: &str, revision: i64) -> pb::RangeRequest {
    pb::RangeRequest { key: key.as_bytes().to_vec().into(), revision, ..Default::default() }
}

fn show_put(_: pb::PutResponse) -> String {
    String::new()
}

fn show_txn(t: pb::TxnResponse) -> String {
    format!("succeeded {} responses {}", t.succeeded, t.responses.len())
}

type Kv = pb::kv_client::KvClient<Channel>;

/// Runs every case against the cluster's third member; returns the transcript.
pub async fn error_cases(cluster: &Cluster) -> Vec<String> {
    let endpoint = format!("http://{}", cluster.endpoint(2));
    let channel = Channel::from_shared(endpoint).unwrap().connect().await.unwrap();
    let mut kv = pb::kv_client::KvClient::new(channel.clone());
    let mut out = Log(cluster.kind, Vec::new());
    request_size(&mut kv, &mut out).await;
    txn_operations(&mut kv, &mut out).await;
    duplicate_keys(&mut kv, &mut out).await;
    empty_keys(&mut kv, &mut out).await;
    revisions(&mut kv, &mut out).await;
    leases(&mut kv, pb::lease_client::LeaseClient::new(channel.clone()), &mut out).await;
    let watch = pb::watch_client::WatchClient::new(channel);
    out.push(format!("watch an empty key: {}", watch_empty_key(watch).await));
    out.1
}

/// etcd's 1.5 MiB request limit, and gRPC's message limit 512 KiB above it.
async fn request_size(kv: &mut Kv, out: &mut Log) {
    let r = kv.put(put("big", vec![b'v'; 2 << 20])).await;
    out.push(format!("put a 2 MiB value: {}", outcome(r, show_put)));
    let r = kv.put(put("big", vec![b'v'; GRPC_MESSAGE_BYTES_MAX - 4096])).await;
    out.push(format!("put a value 4 KiB under 2 MiB: {}", outcome(r, show_put)));
    let r = kv.put(put("big", vec![b'v'; REQUEST_BYTES_MAX + 1024])).await;
    out.push(format!("put a value 1 KiB over 1.5 MiB: {}", outcome(r, show_put)));
    let r = kv.put(put("big", vec![b'v'; REQUEST_BYTES_MAX - 4096])).await;
    out.push(format!("put a value 4 KiB under 1.5 MiB: {}", outcome(r, show_put)));
    let half = |key: &str| pb::RequestOp {
        request: Some(Request::RequestPut(put(key, vec![b'v'; REQUEST_BYTES_MAX / 2]))),
    };
    let r = kv.txn(txn(vec![half("half/1"), half("half/2")])).await;
    out.push(format!("txn putting two 0.75 MiB values: {}", outcome(r, show_txn)));
    let r =
        kv.delete_range(pb::DeleteRangeRequest { key: "big".into(), ..Default::default() }).await;
    out.push(format!("delete it: {}", outcome(r, |d| format!("deleted {}", d.deleted))));
}

/// At most 128 operations (or compares) per txn level; a nested txn may have what its
/// parent level leaves.
async fn txn_operations(kv: &mut Kv, out: &mut Log) {
    let r = kv.txn(txn(puts("many/", TXN_OPS_MAX + 1))).await;
    out.push(format!("txn with 129 puts: {}", outcome(r, show_txn)));
    let r = kv.txn(txn(puts("many/", TXN_OPS_MAX))).await;
    out.push(format!("txn with 128 puts: {}", outcome(r, show_txn)));
    let compares = (0..=TXN_OPS_MAX)
        .map(|i| pb::Compare {
            key: format!("many/{i}").into_bytes().into(),
            target: pb::compare::CompareTarget::Version as i32,
            target_union: Some(pb::compare::TargetUnion::Version(1)),
            ..Default::default()
        })
        .collect();
    let r = kv.txn(pb::TxnRequest { compare: compares, ..Default::default() }).await;
    out.push(format!("txn with 129 compares: {}", outcome(r, show_txn)));
    let mut ops = puts("many/", 100);
    ops.push(nested(puts("inner/", 29), Vec::new()));
    let r = kv.txn(txn(ops.clone())).await;
    out.push(format!("txn with 100 puts and a nested txn of 29: {}", outcome(r, show_txn)));
    // The nested txn may have what the outer level leaves: 128 - 101 operations.
    for n in [28, 27] {
        ops.pop();
        ops.push(nested(puts("inner/", n), Vec::new()));
        let r = kv.txn(txn(ops.clone())).await;
        out.push(format!("txn with 100 puts and a nested txn of {n}: {}", outcome(r, show_txn)));
    }
}

/// No key put twice, or put and deleted, in one txn; etcd 3.4 checks nested txns in
/// order, so a nested delete after a sibling's nested put of the same key passes.
async fn duplicate_keys(kv: &mut Kv, out: &mut Log) {
    let dup_cases: Vec<(&str, Vec<pb::RequestOp>)> = vec![
        ("two puts of x", vec![put_op("x"), put_op("x")]),
        ("a put and a delete of x", vec![put_op("x"), del_op("x", "")]),
        ("a put of x and a delete of [a, z)", vec![put_op("x"), del_op("a", "z")]),
        ("two deletes of x", vec![del_op("x", ""), del_op("x", "")]),
        ("nested then and else both put x", vec![nested(vec![put_op("x")], vec![put_op("x")])]),
        (
            "nested put x, sibling nested del x",
            vec![nested(vec![put_op("x")], Vec::new()), nested(vec![del_op("x", "")], Vec::new())],
        ),
        (
            "nested del x, sibling nested put x",
            vec![nested(vec![del_op("x", "")], Vec::new()), nested(vec![put_op("x")], Vec::new())],
        ),
        (
            "two sibling nested puts of x",
            vec![nested(vec![put_op("x")], Vec::new()), nested(vec![put_op("x")], Vec::new())],
        ),
        ("nested put x, outer put x", vec![nested(vec![put_op("x")], Vec::new()), put_op("x")]),
        ("nested del x, outer put x", vec![nested(vec![del_op("x", "")], Vec::new()), put_op("x")]),
        ("outer del x, nested put x", vec![del_op("x", ""), nested(vec![put_op("x")], Vec::new())]),
    ];
    for (name, ops) in dup_cases {
        // Each from no x, so that what an accepted one did shows alone.
        kv.delete_range(pb::DeleteRangeRequest { key: "x".into(), ..Default::default() })
            .await
            .unwrap();
        let before = kv.range(range("x", 0)).await.unwrap().into_inner().header.unwrap().revision;
        let r = kv.txn(txn(ops)).await;
        out.push(format!("txn with {name}: {}", outcome(r, show_txn)));
        let x = kv.range(range("x", 0)).await.unwrap().into_inner().kvs;
        let x: Vec<_> = x.iter().map(|kv| (kv.mod_revision - before, kv.version)).collect();
        out.push(format!("  then x (mod revision - the one before, version): {x:?}"));
    }
}

/// A request naming no key.
async fn empty_keys(kv: &mut Kv, out: &mut Log) {
    let r = kv.put(put("", b"v".to_vec())).await;
    out.push(format!("put an empty key: {}", outcome(r, show_put)));
    let r = kv.range(range("", 0)).await;
    out.push(format!("range an empty key: {}", outcome(r, |r| format!("count {}", r.count))));
    let r = kv.delete_range(pb::DeleteRangeRequest::default()).await;
    out.push(format!("delete an empty key: {}", outcome(r, |d| format!("deleted {}", d.deleted))));
    let r = kv.txn(txn(vec![put_op("")])).await;
    out.push(format!("txn putting an empty key: {}", outcome(r, show_txn)));
    let r = kv.txn(txn(vec![range_op(range("", 0))])).await;
    out.push(format!("txn ranging an empty key: {}", outcome(r, show_txn)));
}

/// Reading or compacting at a future or compacted revision (the script compacted up
/// to 21).
async fn revisions(kv: &mut Kv, out: &mut Log) {
    let now = kv.range(range("x", 0)).await.unwrap().into_inner().header.unwrap().revision;
    let r = kv.range(range("x", now + 1000)).await;
    out.push(format!(
        "range at a future revision: {}",
        outcome(r, |r| format!("count {}", r.count))
    ));
    let r = kv.range(range("x", 1)).await;
    out.push(format!(
        "range at a compacted revision: {}",
        outcome(r, |r| format!("count {}", r.count))
    ));
    let r = kv.txn(txn(vec![range_op(range("x", now + 1000))])).await;
    out.push(format!("txn ranging at a future revision: {}", outcome(r, show_txn)));
    let r = kv.txn(txn(vec![range_op(range("x", 1))])).await;
    out.push(format!("txn ranging at a compacted revision: {}", outcome(r, show_txn)));
    let r = kv.compact(pb::CompactionRequest { revision: now + 1000, physical: false }).await;
    out.push(format!("compact a future revision: {}", outcome(r, |_| String::new())));
    let r = kv.compact(pb::CompactionRequest { revision: 1, physical: false }).await;
    out.push(format!("compact a compacted revision: {}", outcome(r, |_| String::new())));
}

/// Unknown leases, TTLs over etcd's maximum, a lease id in use, and the put flags that
/// contradict a lease or a value.
async fn leases(kv: &mut Kv, mut lease: pb::lease_client::LeaseClient<Channel>, out: &mut Log) {
    let unknown = 0x7777_7777;
    let r = lease.lease_revoke(pb::LeaseRevokeRequest { id: unknown }).await;
    out.push(format!("revoke an unknown lease: {}", outcome(r, |_| String::new())));
    let r = lease.lease_time_to_live(pb::LeaseTimeToLiveRequest { id: unknown, keys: true }).await;
    out.push(format!(
        "time to live of an unknown lease: {}",
        outcome(r, |t| format!("ttl {}", t.ttl))
    ));
    let r = lease.lease_grant(pb::LeaseGrantRequest { ttl: 9_000_000_001, id: 0 }).await;
    out.push(format!("grant a TTL of 9000000001: {}", outcome(r, |g| format!("ttl {}", g.ttl))));
    let r = lease.lease_grant(pb::LeaseGrantRequest { ttl: 9_000_000_000, id: 0x5555 }).await;
    out.push(format!("grant a TTL of 9000000000: {}", outcome(r, |g| format!("ttl {}", g.ttl))));
    let r = lease.lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0x5555 }).await;
    out.push(format!("grant an id in use: {}", outcome(r, |g| format!("ttl {}", g.ttl))));
    let r = lease.lease_revoke(pb::LeaseRevokeRequest { id: 0x5555 }).await;
    out.push(format!("revoke it: {}", outcome(r, |_| String::new())));
    let r = kv.put(pb::PutRequest { lease: unknown, ..put("leased", b"v".to_vec()) }).await;
    out.push(format!("put with an unknown lease: {}", outcome(r, show_put)));
    let leased = pb::PutRequest { lease: unknown, ..put("leased", b"v".to_vec()) };
    let r = kv.txn(txn(vec![pb::RequestOp { request: Some(Request::RequestPut(leased)) }])).await;
    out.push(format!("txn putting with an unknown lease: {}", outcome(r, show_txn)));
    let r =
        kv.put(pb::PutRequest { lease: unknown, ignore_lease: true, ..put("x", Vec::new()) }).await;
    out.push(format!("put with a lease and ignore_lease: {}", outcome(r, show_put)));
    let r = kv.put(pb::PutRequest { ignore_value: true, ..put("x", b"v".to_vec()) }).await;
    out.push(format!("put with a value and ignore_value: {}", outcome(r, show_put)));
}

/// A watch created on an empty key: the first answer on the stream.
async fn watch_empty_key(mut watch: pb::watch_client::WatchClient<Channel>) -> String {
    let create = pb::WatchCreateRequest::default();
    let request = pb::WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request).await.unwrap();
    let stream = watch.watch(ReceiverStream::new(rx)).await;
    let first = match stream {
        Ok(s) => match tokio::time::timeout(Duration::from_secs(5), s.into_inner().message()).await
        {
            Err(_) => "no answer within 5 s".to_string(),
            Ok(Ok(Some(w))) => format!(
                "created {} canceled {} reason {:?} events {}",
                w.created,
                w.canceled,
                w.cancel_reason,
                w.events.len()
            ),
            Ok(Ok(None)) => "stream ended".to_string(),
            Ok(Err(s)) => format!("error {:?} {:?}", s.code(), s.message()),
        },
        Err(s) => format!("error {:?} {:?}", s.code(), s.message()),
    };
    drop(tx);
    first
}
