//! Orbiter: a health information mediator.
//!
//! # Layout
//!
//! The modules follow one message's way through the engine (see `DESIGN.md`):
//!
//! - [`mllp`]: MLLP framing (our decoder, the `hl7-mllp-codec` encoder) and an MLLP client;
//! - [`listen`]: listener actors, one file per kind; each reads messages off the wire and hands
//!   them to the intake; `listen::files` polls dir and SFTP sources (`listen::dir`,
//!   `listen::sftp`) and hands whole files to [`ingest`];
//! - [`ingest`]: whole documents (HTTP bodies, files): split, journal, idempotent by origin;
//! - [`format`]: the document formats (HL7 v2, FHIR JSON, C-CDA, CSV) and their parsers;
//! - [`intake`]: the ACK policy: parse, route, journal durably, then answer AA/AE/AR (or CA/CE/CR);
//! - [`channel`]: channel definitions (TOML), match rules, the live set and its hot reload,
//!   `orbiter check` / `orbiter try`;
//! - [`route`]: the pipeline after the journal: channels, transforms, delivery, retries, and
//!   per-patient ordering;
//! - [`transform`]: the pool of sync actors running Rhai, one Engine per worker;
//! - [`script`]: the Rhai sandbox and the script API (HL7 paths, FHIR helpers, utilities);
//! - [`deliver`]: destinations (the CDR, any FHIR server, files, mediators), failure
//!   classification, and unconditional creates made repeatable (`deliver::creates`);
//! - [`mediator`]: OpenHIM-style mediators: registration, config definitions, heartbeats, the
//!   registry, and the `application/json+openhim` answer;
//! - [`cdr`]: the embedded FHIR R4 store served under `/fhir`;
//! - [`hl7`]: the HL7 v2 codec: parsing, path access, escapes, batches, charsets, ACK building;
//! - [`journal`]: the sled transaction log with group commit: what was ACKed is on disk; its
//!   retention (pruning by age and status per channel) and per-channel status counters;
//! - [`admin`]: the admin HTTP port: health, readiness, metrics, the channels, transactions,
//!   stats and mediators APIs; API clients, roles, the audit trail and the OpenAPI document (its route table
//!   is `admin::routes`);
//! - [`metrics`]: every Prometheus metric, declared in one place;
//! - [`config`]: the TOML configuration and its `ORBITER_…` environment overrides;
//! - [`data_dir`]: creating the data dir private to the engine's user;
//! - [`tls`]: rustls server configurations from PEM files, for every listener;
//! - [`logging`]: tracing setup, with dependencies that would log PHI capped;
//! - [`server`]: `orbiter run`, wiring it all into one actix system;
//! - [`sled_db`]: opening a sled database, waiting out a lock this process is letting go;
//! - [`doctor`]: `orbiter doctor`, the operator's first checks;
//! - [`cli`]: the `orbiter` command line.

pub mod admin;
pub mod allocator;
pub mod cdr;
pub mod channel;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod deliver;
pub mod doctor;
pub mod format;
pub mod hl7;
pub mod ingest;
pub mod intake;
pub mod journal;
pub mod listen;
pub mod logging;
pub mod mediator;
pub mod metrics;
pub mod mllp;
pub mod route;
pub mod script;
pub mod server;
pub mod sled_db;
pub mod tls;
pub mod transform;
