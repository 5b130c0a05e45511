//! Values that do not decode as the type asked for: workflow input at
//! `Engine::start`, a recorded step result, a hook payload. Each error names
//! the field path and the expected type, keeps the codec's error as
//! `source()`, and no message (nor the run's recorded error) carries the CBOR
//! decoder's Debug output. Also: a bad custom token and bad hook metadata are
//! different errors.

mod support;

use std::collections::BTreeMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::engine;

use serde::{Deserialize, Serialize};
use workflow_core::{Context, EngineError, HookError, HookOptions, StepError, WorkflowError};
use workflow_store::{CodecError, EventData, MemoryStore, RunId, Store};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    amount_cents: u64,
}

fn assert_plain(text: &str) {
    for debug in ["Semantic(", "Syntax(", "Io(", "RecursionLimitExceeded"] {
        assert!(!text.contains(debug), "decoder Debug output in {text:?}");
    }
}

/// The codec's error behind `e`, with its path; asserts that it in turn
/// has the decoder's error as its source.
fn codec_source(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let codec = e
        .source()
        .and_then(|s| s.downcast_ref::<CodecError>())
        .expect("source() is the codec's error");
    let CodecError::Decode(decode) = codec else {
        panic!("expected CodecError::Decode, got {codec:?}");
    };
    assert!(codec.source().is_some(), "the decoder's error is kept");
    decode.path().map(str::to_string)
}

async fn recorded_failure(store: &MemoryStore, run: RunId) -> String {
    store
        .read_log(run)
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e.data {
            EventData::RunFailed { error } => Some(error.message),
            _ => None,
        })
        .expect("a run_failed event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_typed_input_at_start_names_the_field_and_keeps_the_source() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Line {
        price: u64,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Cart {
        items: Vec<Line>,
    }
    let e = engine(MemoryStore::new(), |b| {
        b.workflow("order", |_: Context, o: Order| async move { Ok(o.id) })
            .workflow("cart", |_: Context, c: Cart| async move {
                Ok(c.items.len() as u64)
            })
    });
    let err = e
        .start("order", &BTreeMap::from([("id", "x")]))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        "input for workflow \"order\" does not decode as its input type: \
         field `id`: invalid type: string, expected integer"
    );
    assert_plain(&text);
    assert_plain(&format!("{err:?}"));
    assert!(matches!(err, EngineError::InvalidInput { .. }));
    assert_eq!(codec_source(&err).as_deref(), Some("id"));

    let items = serde_like_items();
    let err = e
        .start("cart", &BTreeMap::from([("items", items)]))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("field `items[2].price`: invalid type: string, expected integer"),
        "{err}"
    );
    assert_eq!(codec_source(&err).as_deref(), Some("items[2].price"));
    e.shutdown().await;
}

/// Three cart lines; the third has a text price.
fn serde_like_items() -> Vec<BTreeMap<&'static str, Price>> {
    vec![
        BTreeMap::from([("price", Price::Cents(1))]),
        BTreeMap::from([("price", Price::Cents(2))]),
        BTreeMap::from([("price", Price::Text("free"))]),
    ]
}

#[derive(Serialize)]
#[serde(untagged)]
enum Price {
    Cents(u64),
    Text(&'static str),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_typed_output_names_the_field() {
    let e = engine(MemoryStore::new(), |b| {
        b.workflow("id", |_: Context, _: ()| async move {
            Ok(BTreeMap::from([("id", "x")]))
        })
    });
    let run = e.start("id", &()).await.unwrap();
    let err = e.result::<Order>(&run).await.unwrap_err();
    assert!(matches!(err, EngineError::OutputDecode { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("field `id`: invalid type: string, expected integer"),
        "{err}"
    );
    assert_eq!(codec_source(&err).as_deref(), Some("id"));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_typed_hook_payload_names_the_field_in_the_error_and_the_log() {
    let store = MemoryStore::new();
    let seen: Arc<Mutex<Option<HookError>>> = Arc::default();
    let captured = seen.clone();
    let e = engine(store.clone(), move |b| {
        b.workflow("typed", move |ctx: Context, _: ()| {
            let captured = captured.clone();
            async move {
                let mut hook = ctx.create_hook::<Order>(HookOptions::token("typed-order"))?;
                match hook.next().await {
                    Ok(order) => Ok(order.id),
                    Err(e) => {
                        *captured.lock().unwrap() = Some(e.clone());
                        Err(e.into())
                    }
                }
            }
        })
    });
    let run = e.start("typed", &()).await.unwrap();
    e.wait_for_hook("typed-order", Duration::from_secs(10))
        .await
        .unwrap();
    e.resume_hook("typed-order", &BTreeMap::from([("id", "x")]))
        .await
        .unwrap();
    let err = e.result::<u64>(&run).await.unwrap_err();
    let EngineError::RunFailed { message, .. } = &err else {
        panic!("expected RunFailed, got {err:?}");
    };
    assert_eq!(
        message,
        "hook payload does not decode as the expected type: \
         field `id`: invalid type: string, expected integer"
    );
    assert_plain(&err.to_string());
    assert_eq!(&recorded_failure(&store, run).await, message);

    let hook_error = seen.lock().unwrap().clone().expect("the workflow saw it");
    assert!(matches!(hook_error, HookError::Decode { .. }));
    assert_eq!(hook_error.to_string(), *message);
    assert_eq!(codec_source(&hook_error).as_deref(), Some("id"));
    e.shutdown().await;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Quote {
    price: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TypedQuote {
    price: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_step_result_of_another_type_names_the_field_in_the_error_and_the_log() {
    let store = MemoryStore::new();
    // The first deployment records the step result with a text price ...
    let old = engine(store.clone(), |b| {
        b.workflow("quote", |ctx: Context, _: ()| async move {
            let mut hook = ctx.create_hook::<bool>(HookOptions::token("quote-go"))?;
            let quote = ctx
                .step("quote", |_| async {
                    Ok::<_, StepError>(Quote {
                        price: "ten".into(),
                    })
                })
                .await?;
            hook.next().await?;
            Ok(quote.price.len() as u64)
        })
    });
    let run = old.start("quote", &()).await.unwrap();
    old.wait_for_hook("quote-go", Duration::from_secs(10))
        .await
        .unwrap();
    old.shutdown().await;

    // ... the next one reads it back as a number.
    let seen: Arc<Mutex<Option<WorkflowError>>> = Arc::default();
    let captured = seen.clone();
    let new = engine(store.clone(), move |b| {
        b.workflow("quote", move |ctx: Context, _: ()| {
            let captured = captured.clone();
            async move {
                let mut hook = ctx.create_hook::<bool>(HookOptions::token("quote-go"))?;
                let quote = match ctx
                    .step("quote", |_| async {
                        Ok::<_, StepError>(TypedQuote { price: 10 })
                    })
                    .await
                {
                    Ok(q) => q,
                    Err(e) => {
                        *captured.lock().unwrap() = Some(e.clone());
                        return Err(e);
                    }
                };
                hook.next().await?;
                Ok(quote.price)
            }
        })
    });
    new.resume_hook("quote-go", &true).await.unwrap();
    let err = new.result::<u64>(&run).await.unwrap_err();
    let EngineError::RunFailed { message, .. } = &err else {
        panic!("expected RunFailed, got {err:?}");
    };
    assert_eq!(
        message,
        "recorded step result does not decode as the expected type: \
         field `price`: invalid type: string, expected integer"
    );
    assert_plain(message);
    assert_eq!(&recorded_failure(&store, run).await, message);

    let workflow_error = seen.lock().unwrap().clone().expect("the workflow saw it");
    assert!(matches!(workflow_error, WorkflowError::Decode { .. }));
    assert_eq!(codec_source(&workflow_error).as_deref(), Some("price"));
    new.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_custom_token_and_bad_metadata_are_different_errors() {
    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("metadata refuses to be encoded"))
        }
    }
    let e = engine(MemoryStore::new(), |b| {
        b.workflow("bad-options", |ctx: Context, _: ()| async move {
            // Each is refused when the hook is created, not when awaited.
            let bad_metadata =
                ctx.create_hook::<u32>(HookOptions::token("fine-token").metadata(&Refuses));
            let bad_token = ctx.create_hook::<u32>(HookOptions::token("no spaces allowed"));
            let both = ctx.create_hook::<u32>(HookOptions::token("no spaces").metadata(&Refuses));
            Ok([
                format!("{:?}", bad_metadata.map(drop)),
                format!("{:?}", bad_token.map(drop)),
                format!("{:?}", both.map(drop)),
            ])
        })
    });
    let run = e.start("bad-options", &()).await.unwrap();
    let [metadata, token, both] = e.result::<[String; 3]>(&run).await.unwrap();
    assert!(metadata.starts_with("Err(InvalidMetadata"), "{metadata}");
    assert!(
        metadata.contains("metadata refuses to be encoded"),
        "{metadata}"
    );
    assert!(token.starts_with("Err(InvalidToken"), "{token}");
    // The token is what a sender uses: it is reported first.
    assert!(both.starts_with("Err(InvalidToken"), "{both}");

    let display = HookError::InvalidMetadata {
        message: "x".into(),
    }
    .to_string();
    assert_eq!(display, "invalid hook metadata: x");
    e.shutdown().await;
}
