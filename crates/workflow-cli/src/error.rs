//! The CLI's errors: each prints as one line a person can act on.

use crate::ops::OpError;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The data directory could not be opened.
    #[error("cannot open the data directory {path}: {message}")]
    Open {
        /// The directory.
        path: String,
        /// Why.
        message: String,
    },
    /// The data directory is held by another process (a running server, or
    /// another command).
    #[error("{path} is in use by another process: stop it, or name its server with --server URL")]
    Locked {
        /// The directory.
        path: String,
    },
    /// The address could not be listened on.
    #[error("cannot listen on {addr}: {message}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The command line asks for something that cannot work.
    #[error("{0}")]
    Usage(String),
    /// The data directory is held by another process whose address is not
    /// known (see [`crate::address::find_server`]).
    #[error(
        "{path} is in use by another process, but {message}; name the server with --server URL"
    )]
    NoServer {
        /// The data directory.
        path: String,
        /// What is wrong with its address file.
        message: String,
    },
    /// The server's address file could not be written.
    #[error("cannot write the server address file {path}: {message}")]
    AddressFile {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The input is not valid JSON.
    #[error("invalid JSON {what}: {message}")]
    Json {
        /// Which argument.
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// An operation failed.
    #[error(transparent)]
    Op(#[from] OpError),
    /// `check-replay` found runs the code no longer reproduces.
    #[error("{0} run(s) no longer match the workflow code")]
    Mismatches(usize),
}
