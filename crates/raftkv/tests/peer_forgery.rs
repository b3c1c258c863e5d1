//! Peer forgery on real processes (issue 10): a process that is no member connects to
//! every member's peer port and sends forged, extreme and malformed Hellos, streams and
//! messages while a writer runs. Before the fix one such message crashed a member (an
//! append answer with index u64::MAX, a snapshot chunk announcing 2^62 bytes, a term of
//! u64::MAX) and one forged Hello rewrote another member's client URLs.
//!
//! Afterwards: every member is still running, a leader exists, every acknowledged write
//! reads back linearizably from every member, `MemberList` shows the same client URLs on
//! every member as before, and each attacked member counted dropped messages in
//! `/metrics`.
//!
//! Everything forged here is refused or dropped by design. A forger that sends
//! well-formed messages in a member's name can still disturb the cluster (Raft trusts
//! its members); only TLS on the peer port stops that (see the README's security notes).

mod common;

use bytes::Bytes;
use common::TestCluster;
use proto::etcdserverpb as pb;
use proto::etcdserverpb::cluster_client::ClusterClient;
use proto::peer::peer_client::PeerClient;
use proto::peer::{self as wire, message::Body};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::codegen::tokio_stream;

/// How many times each member is attacked.
const ATTACK_ROUNDS: u64 = 10;
/// A fake URL no honest member advertises.
const FORGED_URL: &str = "http://forged.invalid:1";

fn msg(from: u64, to: u64, term: u64, body: Body) -> wire::Message {
    wire::Message { from, to, term, body: Some(body) }
}

fn meta(index: u64, term: u64, voters: Vec<u64>) -> Option<wire::SnapshotMeta> {
    Some(wire::SnapshotMeta {
        index,
        term,
        conf: Some(wire::ConfState { voters, ..Default::default() }),
    })
}

/// Messages to member `to` on a stream that speaks for `member` (another member, `other`
/// a third), in a cluster at `term`: each must be dropped, by the server's guard or by
/// the core, without effect.
fn hostile_messages(member: u64, other: u64, to: u64, term: u64) -> Vec<wire::Message> {
    let max = u64::MAX;
    let append_resp = |index| Body::AppendResp(wire::AppendResponse { index, reject: None });
    let beat = Body::Heartbeat(wire::HeartbeatRequest { commit: 1, read_round: 1 });
    let huge_chunk = Body::Snapshot(wire::SnapshotChunk {
        meta: meta(1 << 40, term, vec![member, other, to]),
        offset: 0,
        total_bytes: 1 << 62,
        chunk: Bytes::from_static(b"x"),
        done: false,
    });
    let entries = (0..3)
        .map(|k| wire::Entry { term, index: 10 + 2 * k, kind: 1, data: Bytes::new() })
        .collect();
    let gap = Body::Append(wire::AppendRequest { prev_index: 9, prev_term: 1, entries, commit: 9 });
    let bad_kind = Body::Append(wire::AppendRequest {
        prev_index: 0,
        prev_term: 0,
        entries: vec![wire::Entry { term, index: 1, kind: 99, data: Bytes::new() }],
        commit: 0,
    });
    vec![
        // In another member's name, on this member's stream.
        msg(
            other,
            to,
            term.saturating_add(1),
            Body::Vote(wire::VoteRequest { last_index: max, last_term: term, transfer: false }),
        ),
        // Out of bounds.
        msg(member, to, max, beat.clone()),
        msg(member, to, term, append_resp(max)),
        msg(member, to, term, huge_chunk),
        msg(member, to, term, Body::ReadIndexResp(wire::ReadIndexResponse { ctx: 1, index: max })),
        msg(member, to, term.saturating_add(1), gap),
        msg(member, 0, term, beat.clone()),
        msg(member, member, term, beat.clone()),
        // Within bounds, but beyond what any member could send now: the core drops them.
        msg(member, to, term.saturating_add(1 << 40), beat),
        msg(member, to, term, append_resp(1 << 61)),
        // Malformed.
        wire::Message { from: member, to, term, body: None },
        msg(member, to, term, bad_kind),
    ]
}

/// Sends every forgery to member `i` of `cluster`; returns how many messages it sent
/// that the member must have dropped.
async fn attack(cluster: &TestCluster, i: usize, ids: &[u64], cluster_id: u64, term: u64) -> u64 {
    let channel = tonic::transport::Channel::from_shared(cluster.peer_url(i))
        .unwrap()
        .connect()
        .await
        .expect("peer port reachable");
    let mut peer = PeerClient::new(channel);
    let to = ids[i];
    let (member, other) = (ids[(i + 1) % 3], ids[(i + 2) % 3]);

    // Hellos: another member's name with forged URLs (accepted, URLs ignored), a stranger,
    // another cluster, and a name of a megabyte.
    let hello = |member_id, cluster_id| wire::HelloRequest {
        cluster_id,
        member_id,
        member_name: "forger".into(),
        target_member_id: to,
        protocol_version: proto::PEER_PROTOCOL_VERSION,
        client_urls: vec![FORGED_URL.into()],
    };
    assert!(peer.hello(hello(member, cluster_id)).await.is_ok(), "a member's name is accepted");
    for (id, cid) in [(12345, cluster_id), (member, cluster_id ^ 1), (0, 0)] {
        let refused = peer.hello(hello(id, cid)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    }
    let big = wire::HelloRequest { member_name: "n".repeat(1 << 20), ..hello(member, cluster_id) };
    let _ = peer.hello(big).await;

    // Streams that name no member, a stranger, or the member itself are refused.
    for header in [None, Some("3039".to_string()), Some(format!("{to:x}"))] {
        let batch = wire::MessageBatch { cluster_id, messages: Vec::new() };
        let mut req = tonic::Request::new(tokio_stream::iter(vec![batch]));
        if let Some(h) = header {
            req.metadata_mut().insert("raftkv-member-id", h.parse().unwrap());
        }
        let refused = peer.stream(req).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    }

    // A stream in another member's name carrying only messages that must be dropped,
    // in batches of one (a bad message no longer ends the stream).
    let messages = hostile_messages(member, other, to, term);
    let sent = messages.len() as u64;
    let batches: Vec<_> = messages
        .into_iter()
        .map(|m| wire::MessageBatch { cluster_id, messages: vec![m] })
        .collect();
    let mut req = tonic::Request::new(tokio_stream::iter(batches));
    req.metadata_mut().insert("raftkv-member-id", format!("{member:x}").parse().unwrap());
    let ack = peer.stream(req).await.expect("the stream survives bad messages").into_inner();
    assert_eq!(ack.messages_received, sent);

    // A batch from another cluster ends the stream; a forwarded write of random bytes is
    // answered "malformed".
    let foreign = wire::MessageBatch { cluster_id: cluster_id ^ 1, messages: Vec::new() };
    let mut req = tonic::Request::new(tokio_stream::iter(vec![foreign]));
    req.metadata_mut().insert("raftkv-member-id", format!("{member:x}").parse().unwrap());
    assert!(peer.stream(req).await.is_err());
    let junk = wire::ForwardRequest { cluster_id, command: Bytes::from(vec![0xff; 64]) };
    let answer = peer.forward(junk).await.expect("forward answers").into_inner();
    assert_eq!(answer.error, wire::ForwardError::Malformed as i32);
    sent
}

/// The frame stream's preface (server's `peer_frame::PREFACE`), spelled out: the test
/// speaks the wire format as a stranger would.
const PREFACE: &[u8; 8] = b"raftkvP\x01";
const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const REFUSED: u8 = 3;
const BATCH: u8 = 4;
const FORWARD: u8 = 6;
const FORWARD_ANSWERS: u8 = 7;

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32 + 1).to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// Connects to member `i`'s peer port, sends `bytes`, half-closes, and returns all the
/// member sends back until it closes (within 20 s: a stream that brings nothing more
/// is closed by the member).
async fn exchange(cluster: &TestCluster, i: usize, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = cluster.peer_url(i).trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("peer port reachable");
    conn.write_all(bytes).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer));
    let _ = read.await.expect("the member closes the connection");
    answer
}

/// The first frame after the member's preface: its kind and payload.
fn first_frame(answer: &[u8]) -> (u8, Vec<u8>) {
    assert!(answer.starts_with(PREFACE), "answer {answer:?}");
    let len = u32::from_be_bytes(answer[8..12].try_into().unwrap()) as usize;
    (answer[12], answer[13..12 + len].to_vec())
}

/// The forgeries of [`attack`] on the frame stream: a wrong version, a stranger's and
/// the member's own Hello, a length of 2^32-1, garbage, a truncated frame, an
/// undecodable batch and the hostile messages one per frame in another member's name.
/// Returns how many of them the member must have counted as invalid.
async fn attack_frames(
    cluster: &TestCluster,
    i: usize,
    ids: &[u64],
    cluster_id: u64,
    term: u64,
) -> u64 {
    use prost::Message as _;
    let to = ids[i];
    let (member, other) = (ids[(i + 1) % 3], ids[(i + 2) % 3]);
    let hello = |member_id| {
        let h = wire::HelloRequest {
            cluster_id,
            member_id,
            member_name: "forger".into(),
            target_member_id: to,
            protocol_version: proto::PEER_PROTOCOL_VERSION,
            client_urls: vec![FORGED_URL.into()],
        };
        frame(HELLO, &h.encode_to_vec())
    };
    let refused = |answer: Vec<u8>, words: &str| {
        let (kind, text) = first_frame(&answer);
        let text = String::from_utf8_lossy(&text).into_owned();
        assert_eq!(kind, REFUSED, "{text}");
        assert!(text.contains(words), "{text:?} should say {words:?}");
    };
    let opened = |parts: &[&[u8]]| {
        [&PREFACE[..]].iter().chain(parts).flat_map(|p| p.iter()).copied().collect::<Vec<u8>>()
    };

    refused(exchange(cluster, i, b"raftkvP\x09").await, "version 9");
    refused(exchange(cluster, i, &opened(&[&hello(12345)])).await, "unknown member");
    refused(exchange(cluster, i, &opened(&[&hello(to)])).await, "other than this one");
    let huge = [0xff, 0xff, 0xff, 0xff, BATCH];
    refused(exchange(cluster, i, &opened(&[&huge])).await, "4294967295 bytes");
    refused(exchange(cluster, i, &opened(&[&frame(BATCH, &[])])).await, "Hello frame");
    // Garbage without the preface goes to the gRPC server, which closes on it.
    let answer = exchange(cluster, i, &[0x42; 64]).await;
    assert!(!answer.starts_with(PREFACE));

    // In a member's name: truncated frame, undecodable batch (each ends its stream).
    let batch_frame =
        |messages| frame(BATCH, &wire::MessageBatch { cluster_id, messages }.encode_to_vec());
    let cut = batch_frame(hostile_messages(member, other, to, term));
    let answer = exchange(cluster, i, &opened(&[&hello(member), &cut[..cut.len() / 2]])).await;
    assert_eq!(first_frame(&answer).0, WELCOME, "a member's name is accepted");
    let answer = exchange(cluster, i, &opened(&[&hello(member), &frame(BATCH, &[0xff; 9])])).await;
    assert_eq!(first_frame(&answer).0, WELCOME);
    // Forwarded writes in a member's name that break the rules: each ends its stream
    // with the reason (counted), before anything is executed or decoded.
    let forward = |cluster_id, commands: Vec<Bytes>| {
        let f = wire::ForwardFrame { cluster_id, batch_id: 1, timeout_ms: 0, commands };
        frame(FORWARD, &f.encode_to_vec())
    };
    let forgeries = [
        (forward(cluster_id, vec![Bytes::new(); 1025]), "more than 1024"),
        (forward(cluster_id ^ 1, vec![Bytes::from_static(b"x")]), "another cluster"),
        (frame(FORWARD, &[0x22, 0x7f]), "bad Forward frame"),
        (frame(FORWARD_ANSWERS, &[]), "unexpected ForwardAnswers"),
    ];
    for (bytes, words) in &forgeries {
        let answer = exchange(cluster, i, &opened(&[&hello(member), bytes])).await;
        assert_eq!(first_frame(&answer).0, WELCOME, "a member's name is accepted");
        let welcome_len = u32::from_be_bytes(answer[8..12].try_into().unwrap()) as usize;
        let after_welcome = [&PREFACE[..], &answer[12 + welcome_len..]].concat();
        let (kind, text) = first_frame(&after_welcome);
        let text = String::from_utf8_lossy(&text).into_owned();
        assert_eq!(kind, REFUSED, "{text}");
        assert!(text.contains(words), "{text:?} should say {words:?}");
    }
    // The hostile messages, one per frame: each dropped, the stream kept.
    let messages = hostile_messages(member, other, to, term);
    let sent = messages.len() as u64;
    let frames: Vec<Vec<u8>> = messages.into_iter().map(|m| batch_frame(vec![m])).collect();
    let hello_member = hello(member);
    let mut parts: Vec<&[u8]> = vec![&hello_member];
    parts.extend(frames.iter().map(|f| &f[..]));
    let answer = exchange(cluster, i, &opened(&parts)).await;
    assert_eq!(first_frame(&answer).0, WELCOME);
    // The guard drops all but the two the core drops itself; plus the two broken streams
    // and the four forged forward frames.
    sent - 2 + 2 + 4
}

/// Every member's client URLs as member `i` lists them, sorted by member id.
async fn member_urls(cluster: &TestCluster, i: usize) -> (u64, Vec<(u64, Vec<String>)>) {
    let mut c = ClusterClient::new(cluster.channel(i));
    let list = c.member_list(pb::MemberListRequest::default()).await.unwrap().into_inner();
    let mut urls: Vec<_> = list.members.iter().map(|m| (m.id, m.client_ur_ls.clone())).collect();
    urls.sort();
    (list.header.unwrap().cluster_id, urls)
}

fn counter(cluster: &TestCluster, i: usize, name: &str) -> u64 {
    let (_, body) = cluster.http_get(i, "/metrics").expect("metrics answer");
    let line = body.lines().find(|l| l.starts_with(&format!("{name} "))).expect(name);
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_peer_traffic_leaves_every_member_serving() {
    let cluster = TestCluster::start("peer-forgery", &[]);
    cluster.wait_ready().await;
    // Every member knows every member's URLs (learnt from the Hello answers).
    let before = common::wait_for(
        "all client URLs known",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let (cid, urls) = member_urls(&cluster, 0).await;
            urls.iter().all(|(_, u)| !u.is_empty()).then_some((cid, urls))
        },
    )
    .await;
    let (cluster_id, want_urls) = before;
    let ids: Vec<u64> = {
        let c = cluster.client();
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(c.status(i).await.unwrap().header.unwrap().member_id);
        }
        ids
    };

    // A writer runs throughout; it keeps the keys whose put was acknowledged.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, mut client) = (acked.clone(), stop.clone(), cluster.client());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w/{n}");
                if client.put(key.as_bytes(), &n.to_le_bytes()).await.is_ok() {
                    acked.lock().unwrap().push(key);
                }
                n += 1;
            }
        })
    };
    let mut sent_per_attack = 0;
    let status = cluster.client();
    for _round in 0..ATTACK_ROUNDS {
        for i in 0..3 {
            // The member's own term: a forged message from a later term would be a
            // well-formed one, which Raft obeys (only TLS keeps those out).
            let term = status.status(i).await.unwrap().raft_term;
            sent_per_attack = attack(&cluster, i, &ids, cluster_id, term).await - 2;
            sent_per_attack += attack_frames(&cluster, i, &ids, cluster_id, term).await;
        }
    }
    // The attack's length depends on the machine's load: let the writer reach a fixed
    // number of acknowledged writes (the cluster must still make progress) before stopping.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while acked.lock().unwrap().len() < 10 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    for i in 0..3 {
        assert!(cluster.is_running(i), "member {i} died");
    }
    let leader = cluster.leader().await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 10, "the writer made progress: {} writes", acked.len());
    let mut reader = cluster.client();
    for key in &acked {
        let got = reader.get(key.as_bytes(), false).await.unwrap();
        assert!(got.is_some(), "acknowledged write {key} lost");
    }
    for i in 0..3 {
        let (_, urls) = member_urls(&cluster, i).await;
        assert_eq!(urls, want_urls, "member {i}'s MemberList changed");
        let invalid = counter(&cluster, i, "raftkv_peer_messages_invalid_total");
        // The guard drops all but the two the core drops itself (beyond its state).
        let want = ATTACK_ROUNDS * sent_per_attack;
        assert!(invalid >= want, "member {i}: {invalid} dropped, want {want}");
    }
    println!(
        "leader m{}, {} acknowledged writes kept, {} forged messages per attack",
        leader + 1,
        acked.len(),
        sent_per_attack
    );
}

/// A member removed while its stream is open, that then sends only keepalives (it missed
/// its removal and has nothing to say), is told it was removed within a keepalive
/// interval, not left connected until it speaks (found by the kv simulator's h-watch:
/// before, only Batch and Forward frames were checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_sending_only_keepalives_is_told_on_its_open_stream() {
    use prost::Message as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const KEEPALIVE: u8 = 5;
    let cluster = TestCluster::start("peer-removed-keepalive", &[]);
    cluster.wait_ready().await;
    let status = cluster.client().status(0).await.unwrap().header.unwrap();
    let (cluster_id, to) = (status.cluster_id, status.member_id);
    // A learner that never starts: its name is what the stream speaks for.
    let add =
        pb::MemberAddRequest { peer_ur_ls: vec!["http://127.0.0.1:1".into()], is_learner: true };
    let learner = common::wait_for(
        "learner added",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let add = add.clone();
            let mut c = ClusterClient::new(cluster.channel(0));
            async move { c.member_add(add).await.ok().map(|r| r.into_inner().member.unwrap().id) }
        },
    )
    .await;
    let hello = wire::HelloRequest {
        cluster_id,
        member_id: learner,
        member_name: "n4".into(),
        target_member_id: to,
        protocol_version: proto::PEER_PROTOCOL_VERSION,
        client_urls: vec![],
    };
    let addr = cluster.peer_url(0).trim_start_matches("http://").to_string();
    let opening = [&PREFACE[..], &frame(HELLO, &hello.encode_to_vec())].concat();
    // Member 0 knows the learner once it has applied the addition: dial until welcomed.
    let conn = common::wait_for(
        "the learner's Hello welcomed",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let (addr, opening) = (addr.clone(), opening.clone());
            async move {
                let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
                conn.write_all(&opening).await.ok()?;
                let mut head = [0u8; 13];
                conn.read_exact(&mut head).await.ok()?;
                let len = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
                let mut rest = vec![0u8; len - 1];
                conn.read_exact(&mut rest).await.ok()?;
                (head[12] == WELCOME).then_some(conn)
            }
        },
    )
    .await;

    common::wait_for(
        "learner removed",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let mut c = ClusterClient::new(cluster.channel(0));
            async move { c.member_remove(pb::MemberRemoveRequest { id: learner }).await.ok() }
        },
    )
    .await;
    // From now on only keepalives, one a second; the member must refuse the stream
    // within its keepalive interval (5 s), well before its idle timeout (15 s).
    let (mut rd, mut wr) = conn.into_split();
    let pinger = tokio::spawn(async move {
        while wr.write_all(&frame(KEEPALIVE, &[])).await.is_ok() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let refusal = tokio::time::timeout(Duration::from_secs(12), async {
        loop {
            let mut head = [0u8; 5];
            rd.read_exact(&mut head).await.expect("the stream stays open until refused");
            let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
            let mut payload = vec![0u8; len - 1];
            rd.read_exact(&mut payload).await.unwrap();
            if head[4] == REFUSED {
                return String::from_utf8_lossy(&payload).into_owned();
            }
        }
    })
    .await
    .expect("a removed member's open stream is refused within 12 s");
    pinger.abort();
    assert!(refusal.contains("permanently removed"), "{refusal:?}");
}

/// Forgery on the gRPC peer calls, which members of earlier versions still use: a
/// `Stream` batch of 4097 empty messages, or a `ForwardBatch` of 1025 empty commands, is
/// refused by count before it is decoded (INVALID_ARGUMENT naming the count, the call and
/// the bound); one at the bound is taken. Before, tonic decoded any batch up to 16 MiB:
/// 2 bytes per empty message on the wire, 192 in memory, so one call could make a
/// member allocate over a gigabyte (the frame stream had counted since ba95225).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_batches_past_the_count_bound_are_refused() {
    let cluster = TestCluster::start("peer-grpc-count", &[]);
    cluster.wait_ready().await;
    let status = cluster.client().status(0).await.unwrap().header.unwrap();
    let (cluster_id, to) = (status.cluster_id, status.member_id);
    let mut c = ClusterClient::new(cluster.channel(0));
    let list = c.member_list(pb::MemberListRequest::default()).await.unwrap().into_inner();
    let member = list.members.iter().map(|m| m.id).find(|&id| id != to).expect("a peer");
    let channel = tonic::transport::Channel::from_shared(cluster.peer_url(0))
        .unwrap()
        .connect()
        .await
        .expect("peer port reachable");
    let mut peer = PeerClient::new(channel);

    let stream = |n| {
        let batch = wire::MessageBatch { cluster_id, messages: vec![wire::Message::default(); n] };
        let mut req = tonic::Request::new(tokio_stream::iter(vec![batch]));
        req.metadata_mut().insert("raftkv-member-id", format!("{member:x}").parse().unwrap());
        req
    };
    // At the bound: taken (each message malformed, dropped by the guard, counted).
    let ack = peer.stream(stream(4096)).await.expect("4096 messages are taken").into_inner();
    assert_eq!((ack.batches_received, ack.messages_received), (1, 4096));
    let refused = peer.stream(stream(4097)).await.expect_err("4097 messages are refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let message = refused.message();
    assert!(message.starts_with("4097 Raft messages in one MessageBatch"), "{message}");
    assert!(message.contains("(at most 4096): the sender must split"), "{message}");
    // Both counted as invalid peer input: the 4096 malformed messages and the refusal.
    let invalid = counter(&cluster, 0, "raftkv_peer_messages_invalid_total");
    assert!(invalid > 4096, "{invalid} invalid peer messages counted");

    let forward = |n| wire::ForwardBatchRequest { cluster_id, commands: vec![Bytes::new(); n] };
    let answer = peer.forward_batch(forward(1024)).await.expect("1024 are taken").into_inner();
    assert_eq!(answer.responses.len(), 1024);
    let malformed = wire::ForwardError::Malformed as i32;
    assert!(answer.responses.iter().all(|r| r.error == malformed), "empty commands");
    let refused = peer.forward_batch(forward(1025)).await.expect_err("1025 are refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let message = refused.message();
    assert!(message.starts_with("1025 forwarded writes in one ForwardBatchRequest"), "{message}");
    assert!(message.contains("(at most 1024): the sender must split"), "{message}");

    // The refused member still serves its clients.
    let mut client = cluster.client();
    client.put(b"after", b"refusals").await.expect("a write after the refusals");
}
