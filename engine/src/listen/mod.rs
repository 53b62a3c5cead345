//! Listeners: the ways messages come in. One file per kind; each binds its socket when built
//! (so a port in use fails start-up) and runs as an actor. File sources (`dir`, `sftp`) share
//! their polling logic in [`files`], with one file per transport.

pub mod dir;
pub mod files;
pub mod http;
pub mod mllp;
pub mod ports;
pub mod sftp;

pub use files::FileSources;
pub use mllp::MllpListener;

use std::net::SocketAddr;

/// Why a listener (MLLP, HTTP ingest or the admin port) could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}
