//! Documents that arrive whole (an HTTP body, a file from a folder or an SFTP server) rather than
//! as MLLP frames: one entry point that journals them durably before the source lets go of them
//! (answers the request, moves or deletes the file).
//!
//! - HL7 v2: split into messages (batch files too), each one journaled as MLLP input would be;
//! - FHIR and C-CDA: one transaction for the document;
//! - CSV: one transaction per row (header + that row), streamed from the file, linked to the
//!   file by its origin.
//!
//! `Origin::key` makes acceptance idempotent: a document accepted again with the same key
//! (a restart between journaling a file and moving it away) returns the transactions it already
//! has instead of journaling them twice.

use std::path::PathBuf;

use bytes::Bytes;

use crate::format::Format;
use crate::journal::TxId;

/// One document handed in by a source.
#[derive(Debug)]
pub struct Document {
    pub format: Format,
    pub body: Body,
    pub origin: Origin,
}

/// The document's bytes: in memory, or a local file read as a stream (large CSV files).
#[derive(Debug)]
pub enum Body {
    Bytes(Bytes),
    File(PathBuf),
}

/// Where a document came from.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The listener (source) name, e.g. `http`, `dir:lab-drop`, `sftp:hie`.
    pub listener: String,
    /// Remote address or server.
    pub peer: Option<String>,
    /// The file name (or HTTP path) it arrived as; routed on by `match.file_name`.
    pub name: Option<String>,
    /// Idempotency key (e.g. source + path + size + modification time, or a content hash):
    /// accepting the same key twice journals nothing new.
    pub key: Option<String>,
}

/// What the journal took.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    /// Every transaction the document became (one per HL7 message or CSV row), in order.
    pub ids: Vec<TxId>,
    /// Of those, how many were journaled as `failed` (unparseable message, malformed row).
    pub failed: usize,
    /// True when the key had been accepted before and nothing new was journaled.
    pub already: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The journal did not take it: the source must keep the document and retry.
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The document cannot be taken at all (not the declared format, empty); already journaled
    /// as `failed` with this reason when `id` is set.
    #[error("{reason}")]
    Refused { reason: String, id: Option<TxId> },
}

impl crate::intake::Intake {
    /// Journals a whole document (see the module docs). `Ok` means every part of it is durable:
    /// the source may now answer, move or delete it.
    pub async fn accept(&self, doc: Document) -> Result<Accepted, IngestError> {
        let bytes = match doc.body {
            Body::Bytes(b) => b,
            Body::File(path) => match tokio::fs::read(&path).await {
                Ok(b) => Bytes::from(b),
                Err(source) => return Err(IngestError::Read { path, source }),
            },
        };
        match doc.format {
            Format::Hl7v2 => {
                let parts: Vec<Bytes> = match crate::hl7::split_batch(&bytes) {
                    Ok(parts) if !parts.is_empty() => {
                        parts.iter().map(|p| bytes.slice_ref(p)).collect()
                    }
                    _ => vec![bytes.clone()],
                };
                let mut accepted = Accepted::default();
                for part in parts {
                    let reply = self.submit(part, doc.origin.peer.clone()).await;
                    match (reply.id, reply.code) {
                        (None, _) => {
                            return Err(IngestError::Journal(crate::journal::JournalError::Closed))
                        }
                        (Some(id), code) => {
                            if code != crate::hl7::AckCode::Accept {
                                accepted.failed += 1;
                            }
                            accepted.ids.push(id);
                        }
                    }
                }
                Ok(accepted)
            }
            other => Err(IngestError::Refused {
                reason: format!("{other} documents are not taken yet"),
                id: None,
            }),
        }
    }
}
