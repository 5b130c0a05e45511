//! The workflows an engine knows, by name, with their types erased.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use workflow_store::{CodecError, Payload};

use crate::context::Context;
use crate::error::WorkflowError;

/// A workflow's future with its output encoded.
pub(crate) type WorkflowFuture = BoxFuture<'static, Result<Payload, WorkflowError>>;

type RunFn = dyn Fn(Context, Payload) -> WorkflowFuture + Send + Sync;
type CheckFn = dyn Fn(&Payload) -> Result<(), CodecError> + Send + Sync;

/// One registered workflow function.
#[derive(Clone)]
pub(crate) struct Registered {
    run: Arc<RunFn>,
    check_input: Arc<CheckFn>,
}

impl Registered {
    pub fn new<I, O, F, Fut>(f: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(Context, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let run = move |ctx: Context, input: Payload| -> WorkflowFuture {
            let f = f.clone();
            Box::pin(async move {
                let input: I = input
                    .decode()
                    .map_err(|e| WorkflowError::decode("workflow input", e))?;
                let output = f(ctx, input).await?;
                Payload::encode(&output).map_err(|e| WorkflowError::Fatal {
                    message: format!("workflow output could not be encoded: {e}"),
                })
            })
        };
        Registered {
            run: Arc::new(run),
            check_input: Arc::new(|p: &Payload| p.decode::<I>().map(drop)),
        }
    }

    /// Starts the workflow's future.
    pub fn start(&self, ctx: Context, input: Payload) -> WorkflowFuture {
        (self.run)(ctx, input)
    }

    /// Checks that `input` decodes as the workflow's input type.
    pub fn check_input(&self, input: &Payload) -> Result<(), CodecError> {
        (self.check_input)(input)
    }
}

/// Workflows by name.
pub(crate) type Registry = HashMap<String, Registered>;
