//! Command and response encoding: round trips, and malformed input gives an
//! error that names the offset, never a panic.

use crate::common::*;
use kv::*;

fn sample_commands() -> Vec<Command> {
    let range = RangeRequest {
        key: "a".into(),
        range_end: "z".into(),
        limit: 10,
        revision: 4,
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Value,
        keys_only: true,
        count_only: false,
        min_mod_revision: 1,
        max_mod_revision: 2,
        min_create_revision: 3,
        max_create_revision: 4,
    };
    let txn = TxnRequest {
        compare: vec![
            Compare {
                key: "a".into(),
                range_end: vec![0],
                result: CompareResult::NotEqual,
                target: CompareTarget::Value("x".into()),
            },
            Compare {
                key: "b".into(),
                range_end: vec![],
                result: CompareResult::Less,
                target: CompareTarget::Lease(-1),
            },
        ],
        success: vec![
            RequestOp::Put(PutRequest {
                key: "a".into(),
                value: vec![0, 255, 7],
                lease: 9,
                prev_kv: true,
                ignore_value: false,
                ignore_lease: true,
            }),
            RequestOp::Range(range.clone()),
        ],
        failure: vec![
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: "d".into(),
                range_end: "e".into(),
                prev_kv: true,
            }),
            RequestOp::Txn(TxnRequest {
                compare: vec![Compare {
                    key: "c".into(),
                    range_end: vec![],
                    result: CompareResult::Greater,
                    target: CompareTarget::ModRevision(3),
                }],
                ..Default::default()
            }),
        ],
    };
    vec![
        Command::new(Op::Put(put_req("k", "v"))),
        Command::with_session(u64::MAX, 1, Op::Range(range)),
        Command::new(Op::DeleteRange(DeleteRangeRequest::default())),
        Command::with_session(3, 4, Op::Txn(txn)),
        Command::new(Op::Compact { revision: 17 }),
        Command::new(Op::Get { key: "g".into() }),
        Command::with_session(1, 2, Op::Append { key: "k".into(), suffix: "s".into() }),
        Command::new(Op::RegisterSession),
        Command::new(Op::Alarm {
            action: AlarmAction::Activate,
            member_id: u64::MAX,
            alarm: AlarmType::Nospace,
        }),
        Command::new(Op::Alarm { action: AlarmAction::Get, member_id: 0, alarm: AlarmType::None }),
        Command::new(Op::Alarm {
            action: AlarmAction::Deactivate,
            member_id: 3,
            alarm: AlarmType::Corrupt,
        }),
    ]
}

fn sample_responses() -> Vec<Response> {
    let kv = KeyValue {
        key: "k".into(),
        create_revision: 2,
        mod_revision: 3,
        version: 2,
        value: "v".into(),
        lease: -5,
    };
    let range = RangeResponse {
        revision: 9,
        kvs: vec![kv.clone(), KeyValue::default()],
        more: true,
        count: 7,
    };
    let errors = vec![
        KvError::EmptyKey,
        KvError::KeyTooLarge { len: 1, max: 2 },
        KvError::ValueTooLarge { len: 3, max: 4 },
        KvError::KeyNotFound { key: "k".into() },
        KvError::Compacted { requested: 1, compact_revision: 2 },
        KvError::FutureRevision { requested: 3, current: 2 },
        KvError::TooManyOps { count: 5, max: 4 },
        KvError::TxnTooDeep { max: 8 },
        KvError::DuplicateKeyInTxn { key: "d".into() },
        KvError::StaleSequence { client_id: 1, seq: 2, last_seq: 3 },
        KvError::SessionExpired { client_id: 4 },
        KvError::MalformedCommand { detail: "at byte 3: bad".into() },
        KvError::NoSpace,
        KvError::Corrupt,
    ];
    let mut out = vec![
        Response::Put(PutResponse { revision: 5, prev_kv: Some(kv.clone()) }),
        Response::Range(range.clone()),
        Response::DeleteRange(DeleteRangeResponse {
            revision: 6,
            deleted: 1,
            prev_kvs: vec![kv.clone()],
        }),
        Response::Txn(TxnResponse {
            revision: 7,
            succeeded: true,
            responses: vec![
                ResponseOp::Put(PutResponse::default()),
                ResponseOp::Range(range),
                ResponseOp::DeleteRange(DeleteRangeResponse::default()),
                ResponseOp::Txn(TxnResponse::default()),
            ],
        }),
        Response::Compact(CompactResponse { revision: 8 }),
        Response::Get(GetResponse { revision: 9, kv: Some(kv) }),
        Response::Get(GetResponse::default()),
        Response::Append(PutResponse::default()),
        Response::SessionRegistered { client_id: 77 },
        Response::Alarm(AlarmResponse {
            revision: 4,
            alarms: vec![
                AlarmMember { member_id: 1, alarm: AlarmType::Nospace },
                AlarmMember { member_id: u64::MAX, alarm: AlarmType::Corrupt },
            ],
        }),
    ];
    out.extend(errors.into_iter().map(Response::Error));
    out
}

#[test]
fn commands_round_trip() {
    for c in sample_commands() {
        assert_eq!(Command::decode(&c.encode()), Ok(c));
    }
}

#[test]
fn responses_round_trip() {
    for r in sample_responses() {
        assert_eq!(Response::decode(&r.encode()), Ok(r));
    }
}

#[test]
fn every_truncation_is_an_error() {
    for c in sample_commands() {
        let bytes = c.encode();
        for len in 0..bytes.len() {
            assert!(Command::decode(&bytes[..len]).is_err(), "{c:?} cut at {len}");
        }
    }
    for r in sample_responses() {
        let bytes = r.encode();
        for len in 0..bytes.len() {
            assert!(Response::decode(&bytes[..len]).is_err(), "{r:?} cut at {len}");
        }
    }
}

#[test]
fn trailing_bytes_and_unknown_version_are_errors() {
    let mut bytes = Command::new(Op::RegisterSession).encode();
    bytes.push(0);
    let e = Command::decode(&bytes).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::TrailingBytes { count: 1 });
    assert_eq!(e.offset, 3);
    let e = Command::decode(&[2, 0, 8]).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::UnsupportedVersion { version: 2 });
    assert!(e.to_string().contains("upgrade"), "{e}");
}

#[test]
fn bad_tags_name_the_field_and_offset() {
    let e = Command::decode(&[WIRE_FORMAT_VERSION, 4]).unwrap_err();
    assert_eq!(
        e,
        DecodeError { offset: 1, kind: DecodeErrorKind::BadTag { field: "command flags", tag: 4 } }
    );
    // A put whose flag byte has an unknown bit.
    let mut bytes = Command::new(Op::Put(put_req("k", "v"))).encode();
    *bytes.last_mut().unwrap() = 0x80;
    let e = Command::decode(&bytes).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::BadTag { field: "put flags", tag: 0x80 }));
    assert_eq!(e.offset as usize, bytes.len() - 1);
}

#[test]
fn a_huge_length_or_count_is_refused_before_allocating() {
    // Get with a key length of 4 GiB - 1 and no bytes behind it.
    let mut bytes = vec![WIRE_FORMAT_VERSION, 0, 6];
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Command::decode(&bytes).unwrap_err().kind, DecodeErrorKind::Truncated { .. }));
    // Txn with 4 G compares.
    let mut bytes = vec![WIRE_FORMAT_VERSION, 0, 4];
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(Command::decode(&bytes).is_err());
}

#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    // Hand-built: TXN_DEPTH_MAX + 1 nested txns, each with no compares and
    // one success op; encoding never recurses past the limit on decode.
    let mut bytes = vec![WIRE_FORMAT_VERSION, 0, 4];
    for _ in 0..TXN_DEPTH_MAX {
        bytes.extend_from_slice(&0u32.to_le_bytes()); // compares
        bytes.extend_from_slice(&1u32.to_le_bytes()); // success ops
        bytes.push(4); // a txn
    }
    let e = Command::decode(&bytes).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::TooDeep { max: TXN_DEPTH_MAX });
}

/// Random corruption of valid encodings never panics.
#[test]
fn random_corruption_never_panics() {
    let mut rng = Rng::new(42);
    let commands: Vec<Vec<u8>> = sample_commands().iter().map(Command::encode).collect();
    let responses: Vec<Vec<u8>> = sample_responses().iter().map(Response::encode).collect();
    for _ in 0..20_000 {
        let is_command = rng.chance(50);
        let pool = if is_command { &commands } else { &responses };
        let mut bytes = pool[rng.below(pool.len() as u64) as usize].clone();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(bytes.len() as u64) as usize;
            bytes[i] = rng.next_u64() as u8;
        }
        if rng.chance(20) {
            bytes.truncate(rng.below(bytes.len() as u64) as usize);
        }
        if is_command {
            let _ = Command::decode(&bytes);
        } else {
            let _ = Response::decode(&bytes);
        }
    }
}
