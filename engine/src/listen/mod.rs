//! Listeners: the ways messages come in. One file per kind; each binds its socket when built
//! (so a port in use fails start-up) and runs as an actor.

pub mod http;
pub mod mllp;
pub mod ports;

pub use mllp::{ListenError, MllpListener};
