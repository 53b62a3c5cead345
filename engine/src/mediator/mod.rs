//! Mediators, in OpenHIM's model: processing units outside the engine (any language) that
//! register themselves with a URN, endpoints and config definitions, keep a heartbeat, and
//! answer with a response plus the orchestrations (sub-requests) they made.
//!
//! - [`registration`]: the `POST /api/mediators` document (OpenHIM's `mediatorConfig`);
//! - [`config`]: `configDefs` and the checks on a config an admin sets;
//! - [`registry`]: the registered mediators, heartbeats, online/offline, persistence;
//! - [`response`]: the `application/json+openhim` answer a mediator gives.
//!
//! The HTTP routes are in `admin::mediators`; the channel destination is `deliver::mediator`.

pub mod config;
pub mod registration;
pub mod registry;
pub mod response;

use std::path::PathBuf;

pub use config::{ConfigDef, ConfigType};
pub use registration::{Endpoint, Registration};
pub use registry::{Actor, MediatorRecord, Mediators, Registered};
pub use response::{MediatorResponse, MediatorStatus, Orchestration};

/// Why a mediator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MediatorError {
    /// A registration or config that breaks the rules; the message says which.
    #[error("{0}")]
    Invalid(String),
    #[error("no mediator registered as `{0}`")]
    NotFound(String),
    /// A mediator client acting on a URN another client registered.
    #[error(
        "`{0}` was registered by another API client: use that client's token, or have an admin \
         remove the registration (DELETE /api/mediators/{0}) before registering it with this one"
    )]
    NotOwner(String),
    #[error("mediator registry {file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("mediator registry {file} is not readable JSON: {message}")]
    Corrupt { file: PathBuf, message: String },
}
