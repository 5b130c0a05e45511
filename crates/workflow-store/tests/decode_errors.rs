//! Decoding errors in plain words: the field path, what was found and
//! expected, the CBOR decoder's error as `source()`, and none of its Debug
//! output (`Semantic(None, "...")`) in any message.

use std::collections::BTreeMap;
use std::error::Error as _;

use serde::{Deserialize, Serialize};
use workflow_store::codec::{decode_record, encode_record, DecodeError};
use workflow_store::{CodecError, Payload};

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    name: String,
    price: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cart {
    items: Vec<Item>,
}

#[derive(Serialize)]
struct LooseItem {
    name: &'static str,
    price: serde_json_like::Value,
}

/// Stand-in for an untyped value: a price that is a number or a string.
mod serde_json_like {
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    pub enum Value {
        Num(u64),
        Text(&'static str),
    }
}

fn decode_error(e: CodecError) -> DecodeError {
    match e {
        CodecError::Decode(d) => d,
        other => panic!("expected CodecError::Decode, got {other:?}"),
    }
}

fn assert_plain(text: &str) {
    for debug in [
        "Semantic(",
        "Syntax(",
        "Io(",
        "RecursionLimitExceeded",
        "Value(",
    ] {
        assert!(!text.contains(debug), "decoder Debug output in {text:?}");
    }
}

#[test]
fn a_wrong_typed_nested_field_names_its_path_and_expected_type() {
    use serde_json_like::Value::{Num, Text};
    let loose = BTreeMap::from([(
        "items",
        vec![
            LooseItem {
                name: "a",
                price: Num(1),
            },
            LooseItem {
                name: "b",
                price: Num(2),
            },
            LooseItem {
                name: "c",
                price: Text("cheap"),
            },
        ],
    )]);
    let payload = Payload::encode(&loose).unwrap();
    let err = payload.decode::<Cart>().unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        "field `items[2].price`: invalid type: string, expected integer"
    );
    assert_plain(&text);
    assert_plain(&format!("{err:?}"));

    let decode = decode_error(err.clone());
    assert_eq!(decode.path(), Some("items[2].price"));
    assert_eq!(decode.message(), "invalid type: string, expected integer");

    // The cause is the CBOR decoder's own error, reachable through source().
    let source = err.source().expect("a source");
    match source.downcast_ref::<ciborium::de::Error<std::io::Error>>() {
        Some(ciborium::de::Error::Semantic(_, message)) => {
            assert_eq!(message, "invalid type: string, expected integer")
        }
        other => panic!("source is not the decoder's semantic error: {other:?}"),
    }
}

#[test]
fn a_mismatch_of_the_whole_value_or_a_missing_field_has_no_path() {
    let err = Payload::encode(&"text")
        .unwrap()
        .decode::<u64>()
        .unwrap_err();
    assert_eq!(decode_error(err.clone()).path(), None);
    assert_eq!(err.to_string(), "invalid type: string, expected integer");

    let err = Payload::encode(&BTreeMap::from([("items", Vec::<Item>::new())]))
        .unwrap()
        .decode::<Item>()
        .unwrap_err();
    assert_eq!(err.to_string(), "missing field `name`");
}

#[test]
fn truncated_and_invalid_cbor_are_plain_words() {
    let payload = Payload::encode(&("hello", 42u32)).unwrap();
    let bytes = payload.as_bytes();
    let truncated = Payload(bytes::Bytes::copy_from_slice(&bytes[..bytes.len() - 2]));
    let err = truncated.decode::<(String, u32)>().unwrap_err();
    assert!(err.to_string().contains("unexpected end of input"), "{err}");
    assert_plain(&err.to_string());
    assert!(matches!(
        err.source()
            .and_then(|s| s.downcast_ref::<ciborium::de::Error<std::io::Error>>()),
        Some(ciborium::de::Error::Io(_))
    ));

    // 0x1C: an unsigned integer with reserved additional information 28.
    let err = Payload(bytes::Bytes::from_static(&[0x1C]))
        .decode::<u32>()
        .unwrap_err();
    assert!(err.to_string().contains("not valid CBOR"), "{err}");
    assert_plain(&err.to_string());

    // Records: the same words behind the envelope.
    let record = encode_record(&Cart { items: vec![] }).unwrap();
    let err = decode_record::<Item>(&record).unwrap_err();
    assert_eq!(err.to_string(), "missing field `name`");
}

#[test]
fn deep_nesting_is_plain_words() {
    // 300 nested one-element arrays, then 0.
    let mut bytes = vec![0x81; 300];
    bytes.push(0x00);
    let err = Payload(bytes::Bytes::from(bytes))
        .decode::<ciborium::Value>()
        .unwrap_err();
    assert!(err.to_string().contains("nested too deeply"), "{err}");
    assert_plain(&err.to_string());
}

#[test]
fn decode_errors_compare_by_path_and_message() {
    let a = Payload::encode(&"x").unwrap().decode::<u64>().unwrap_err();
    let b = Payload::encode(&"y").unwrap().decode::<u64>().unwrap_err();
    assert_eq!(a, b);
    assert_eq!(a.clone(), a);
    let c = Payload::encode(&"x").unwrap().decode::<bool>().unwrap_err();
    assert_ne!(a, c);
}

#[test]
fn an_encode_error_is_plain_words() {
    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom(
                "this value refuses to be encoded",
            ))
        }
    }
    let err = Payload::encode(&Refuses).unwrap_err();
    assert_eq!(
        err.to_string(),
        "value could not be encoded as CBOR: this value refuses to be encoded"
    );
}
