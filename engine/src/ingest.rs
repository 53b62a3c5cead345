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
use crate::intake::Arrival;
use crate::journal::{JournalError, TxId};

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
        if doc.format == Format::Csv {
            return self.accept_csv(doc).await;
        }
        let bytes = match doc.body {
            Body::Bytes(b) => b,
            Body::File(path) => match tokio::fs::read(&path).await {
                Ok(b) => Bytes::from(b),
                Err(source) => return Err(IngestError::Read { path, source }),
            },
        };
        let origin = doc.origin;
        // Part `n` of a document has the key `<key>#n`, so a document accepted again after a
        // crash in the middle journals only the parts it had not.
        let arrival = |part: Option<usize>| Arrival {
            peer: origin.peer.clone(),
            origin: origin.name.clone(),
            origin_key: origin.key.as_ref().map(|k| match part {
                Some(n) => format!("{k}#{n}"),
                None => k.clone(),
            }),
        };
        let mut accepted = Accepted::default();
        match doc.format {
            Format::Hl7v2 => {
                let parts: Vec<Bytes> = match crate::hl7::split_batch(&bytes) {
                    Ok(parts) if !parts.is_empty() => {
                        parts.iter().map(|p| bytes.slice_ref(p)).collect()
                    }
                    _ => vec![bytes.clone()],
                };
                let several = parts.len() > 1;
                let mut all_known = true;
                for (n, part) in parts.into_iter().enumerate() {
                    let reply = self
                        .submit_hl7(part, arrival(several.then_some(n + 1)))
                        .await;
                    let Some(id) = reply.id else {
                        return Err(IngestError::Journal(JournalError::Closed));
                    };
                    if reply.code != crate::hl7::AckCode::Accept {
                        accepted.failed += 1;
                    }
                    all_known &= reply.already;
                    accepted.ids.push(id);
                }
                accepted.already = all_known;
            }
            format => {
                let facts = crate::format::facts(format, &bytes);
                let reply = self.submit_document(facts, bytes, arrival(None)).await?;
                if reply.refused.is_some() {
                    accepted.failed += 1;
                }
                accepted.already = reply.already;
                accepted.ids.push(reply.id);
            }
        }
        Ok(accepted)
    }

    /// CSV: one transaction per row, streamed from the file.
    async fn accept_csv(&self, doc: Document) -> Result<Accepted, IngestError> {
        let _ = doc;
        Err(IngestError::Refused {
            reason: "CSV documents are not taken yet".into(),
            id: None,
        })
    }
}
