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
pub use mllp::{ListenError, MllpListener};
