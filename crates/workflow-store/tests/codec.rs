//! The codec: every event round-trips, and damaged bytes are typed errors.

use std::path::PathBuf;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use workflow_store::backend::QueueEntry;
use workflow_store::codec::{self, CodecError, FORMAT_VERSION, MAGIC};
use workflow_store::RunRecord;
use workflow_store::{
    CorrelationId, ErrorRecord, Event, EventData, HookRecord, HookToken, HttpResponseRecord,
    Payload, RunId, Timestamp, WebhookResponse,
};

fn cid() -> impl Strategy<Value = CorrelationId> {
    "[a-z]{1,5}:[0-9]{1,4}".prop_map(|s| CorrelationId::new(s).unwrap())
}

fn tok() -> impl Strategy<Value = HookToken> {
    "[A-Za-z0-9_~.:-]{1,40}".prop_map(|s| HookToken::new(s).unwrap())
}

fn payload() -> impl Strategy<Value = Payload> {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(Payload::from)
}

fn error() -> impl Strategy<Value = ErrorRecord> {
    (".{0,20}", prop::option::of(payload()))
        .prop_map(|(message, details)| ErrorRecord { message, details })
}

fn response() -> impl Strategy<Value = HttpResponseRecord> {
    (
        100u16..600,
        prop::collection::vec(
            ("[a-z-]{1,10}", prop::collection::vec(any::<u8>(), 0..10)),
            0..3,
        ),
        prop::collection::vec(any::<u8>(), 0..30),
    )
        .prop_map(|(status, headers, body)| HttpResponseRecord {
            status,
            headers: headers
                .into_iter()
                .map(|(k, v)| (k, Bytes::from(v)))
                .collect(),
            body: Bytes::from(body),
        })
}

fn event_data() -> impl Strategy<Value = EventData> {
    let ts = any::<u64>().prop_map(Timestamp);
    prop_oneof![
        (".{0,10}", payload()).prop_map(|(workflow, input)| EventData::RunCreated {
            workflow,
            input,
            parent: None
        }),
        Just(EventData::RunStarted),
        payload().prop_map(|output| EventData::RunCompleted { output }),
        error().prop_map(|error| EventData::RunFailed { error }),
        Just(EventData::RunCancelled),
        error().prop_map(|error| EventData::RunBlocked { error }),
        (
            cid(),
            ".{0,10}",
            prop::option::of(prop::collection::vec(any::<u8>(), 0..32))
        )
            .prop_map(|(step, name, d)| EventData::StepCreated {
                step,
                name,
                input_digest: d.map(Bytes::from)
            }),
        (cid(), any::<u32>()).prop_map(|(step, attempt)| EventData::StepStarted { step, attempt }),
        (cid(), payload()).prop_map(|(step, result)| EventData::StepCompleted { step, result }),
        (cid(), error(), ts.clone()).prop_map(|(step, error, retry_at)| EventData::StepRetrying {
            step,
            error,
            retry_at
        }),
        (cid(), error()).prop_map(|(step, error)| EventData::StepFailed { step, error }),
        (
            cid(),
            tok(),
            prop::option::of(payload()),
            prop::option::of(prop_oneof![
                Just(WebhookResponse::Accepted),
                response().prop_map(WebhookResponse::Static),
                any::<u64>().prop_map(|timeout_ms| WebhookResponse::Manual { timeout_ms }),
            ])
        )
            .prop_map(|(hook, token, metadata, webhook)| EventData::HookCreated {
                hook,
                token,
                metadata,
                webhook
            }),
        (cid(), payload()).prop_map(|(hook, payload)| EventData::HookReceived { hook, payload }),
        (cid(), ".{0,10}", response()).prop_map(|(hook, request_id, response)| {
            EventData::HookResponded {
                hook,
                request_id,
                response,
            }
        }),
        cid().prop_map(|hook| EventData::HookDisposed { hook }),
        (cid(), tok(), any::<u128>()).prop_map(|(hook, token, r)| EventData::HookConflict {
            hook,
            token,
            holder: RunId::from_u128(r)
        }),
        (cid(), ts).prop_map(|(wait, resume_at)| EventData::WaitCreated { wait, resume_at }),
        cid().prop_map(|wait| EventData::WaitCompleted { wait }),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (any::<u64>(), any::<u64>(), event_data()).prop_map(|(seq, at, data)| Event {
        seq,
        at: Timestamp(at),
        data,
    })
}

proptest! {
    #[test]
    fn every_event_round_trips(e in event()) {
        let bytes = codec::encode_event(&e).unwrap();
        prop_assert_eq!(bytes[0], MAGIC);
        prop_assert_eq!(bytes[1], FORMAT_VERSION);
        prop_assert_eq!(codec::decode_event(&bytes).unwrap(), e);
    }

    #[test]
    fn every_truncation_is_an_error(e in event()) {
        let bytes = codec::encode_event(&e).unwrap();
        for len in 0..bytes.len() {
            prop_assert!(codec::decode_event(&bytes[..len]).is_err(), "prefix of {} bytes decoded", len);
        }
    }

    #[test]
    fn trailing_bytes_are_an_error(e in event(), extra in prop::collection::vec(any::<u8>(), 1..8)) {
        let mut bytes = codec::encode_event(&e).unwrap();
        bytes.extend(extra);
        prop_assert!(codec::decode_event(&bytes).is_err());
    }

    #[test]
    fn damaged_bytes_never_panic(e in event(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = codec::encode_event(&e).unwrap();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= b;
        }
        let _ = codec::decode_event(&bytes);
        let _ = codec::decode_record::<RunRecord>(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = codec::decode_event(&bytes);
        let _ = codec::decode_record::<HookRecord>(&bytes);
        let _ = codec::decode_record::<QueueEntry>(&bytes);
    }
}

#[test]
fn future_version_is_unsupported_not_guessed() {
    let e = Event {
        seq: 1,
        at: Timestamp(2),
        data: EventData::RunStarted,
    };
    let mut bytes = codec::encode_event(&e).unwrap();
    bytes[1] = FORMAT_VERSION + 1;
    assert_eq!(
        codec::decode_event(&bytes),
        Err(CodecError::UnsupportedVersion {
            found: FORMAT_VERSION + 1,
            supported: FORMAT_VERSION
        })
    );
    bytes[0] = 0x00;
    assert!(matches!(
        codec::decode_event(&bytes),
        Err(CodecError::BadMagic { found: 0 })
    ));
}

#[test]
fn unknown_event_kind_is_malformed() {
    // A CBOR map {"seq": 0, "at": 0, "data": "run_exploded"}.
    #[derive(serde::Serialize)]
    struct Fake {
        seq: u64,
        at: u64,
        data: &'static str,
    }
    let bytes = codec::encode_record(&Fake {
        seq: 0,
        at: 0,
        data: "run_exploded",
    })
    .unwrap();
    match codec::decode_event(&bytes) {
        Err(CodecError::Decode(e)) => {
            assert_eq!(e.path(), Some("data"));
            assert!(
                e.message().contains("unknown variant `run_exploded`"),
                "{e}"
            );
            assert!(e.to_string().starts_with("field `data`: "), "{e}");
        }
        other => panic!("unknown kind decoded as {other:?}"),
    }
}

#[test]
fn invalid_token_in_a_record_is_malformed() {
    #[derive(serde::Serialize)]
    struct Fake {
        seq: u64,
        at: u64,
        data: FakeData,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    enum FakeData {
        HookDisposed { hook: &'static str },
    }
    let bytes = codec::encode_record(&Fake {
        seq: 0,
        at: 0,
        data: FakeData::HookDisposed { hook: "" },
    })
    .unwrap();
    assert!(matches!(
        codec::decode_event(&bytes),
        Err(CodecError::Decode(_))
    ));
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode_event")
}

/// Replays the fuzz target's seed corpus: no input panics, and the `valid-*`
/// seeds decode and re-encode to the same bytes.
#[test]
fn fuzz_corpus_replays_without_panic() {
    let mut count = 0;
    let mut valid = 0;
    for entry in std::fs::read_dir(corpus_dir()).expect("fuzz corpus directory") {
        let path = entry.expect("corpus entry").path();
        let bytes = std::fs::read(&path).expect("corpus file");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let decoded = codec::decode_event(&bytes);
        let _ = codec::decode_record::<RunRecord>(&bytes);
        let _ = codec::decode_record::<HookRecord>(&bytes);
        let _ = codec::decode_record::<QueueEntry>(&bytes);
        if name.starts_with("valid-") {
            let event = decoded.unwrap_or_else(|e| panic!("seed {name} no longer decodes: {e}"));
            assert_eq!(
                codec::encode_event(&event).unwrap(),
                bytes,
                "seed {name} re-encodes differently"
            );
            valid += 1;
        }
        count += 1;
    }
    assert!(
        count >= 20 && valid >= 18,
        "corpus too small: {count} seeds, {valid} valid"
    );
}

/// Writes the seed corpus: one valid record per event kind, plus damaged ones.
/// Run by hand after a format change: `cargo test -p workflow-store --test codec -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    let strategy = event();
    while kinds.len() < 18 {
        let e = strategy.new_tree(&mut runner).unwrap().current();
        let name = e.kind().as_str();
        if kinds.insert(name) {
            let bytes = codec::encode_event(&e).unwrap();
            std::fs::write(dir.join(format!("valid-{name}")), &bytes).unwrap();
            std::fs::write(
                dir.join(format!("truncated-{name}")),
                &bytes[..bytes.len() / 2],
            )
            .unwrap();
        }
    }
    std::fs::write(dir.join("empty"), b"").unwrap();
    std::fs::write(dir.join("bad-magic"), [0u8, 1, 0xa0]).unwrap();
    std::fs::write(dir.join("future-version"), [MAGIC, 200, 0xa0]).unwrap();
    // A byte string claiming 2^62 bytes: must not allocate them.
    std::fs::write(
        dir.join("huge-length"),
        [MAGIC, 1, 0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0],
    )
    .unwrap();
    // 10,000 nested arrays: must hit the depth limit, not the stack.
    let mut deep = vec![MAGIC, 1];
    deep.extend(std::iter::repeat_n(0x81u8, 10_000));
    std::fs::write(dir.join("deep-nesting"), deep).unwrap();
}
