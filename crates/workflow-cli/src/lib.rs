//! The `workflow` command: serve the example workflows on sled, and inspect,
//! start, resume, cancel, unblock and check runs.
//!
//! The binary is a thin layer over this library, so the pieces are reusable:
//! [`workflows`] (the examples), [`ops::Operations`] (the commands, on an
//! engine), [`api`] (the admin API `serve` mounts), [`client::RemoteClient`]
//! (the same commands against a running server, found through its
//! [`address`] file) and [`serve::serve`].
//! The pre-deploy check is [`workflow_core::Engine::check_replay`].
#![warn(missing_docs)]

pub mod address;
pub mod api;
pub mod client;
pub mod error;
pub mod ops;
pub mod serve;
pub mod view;
pub mod workflows;

pub use error::CliError;
