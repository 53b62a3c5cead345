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
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;

use crate::format::Format;
use crate::intake::Arrival;
use crate::journal::{JournalError, TxId};

/// One document handed in by a source.
#[derive(Debug)]
pub struct Document {
    pub format: Format,
    pub body: Body,
    pub origin: Origin,
    /// The character set the sender declared (an HTTP `Content-Type`'s `charset`): for CSV it
    /// overrides the channel's `[csv] encoding`.
    pub charset: Option<crate::format::csv::CsvEncoding>,
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
    /// The file name (or HTTP path) it arrived as: the transaction's `origin` (file sources
    /// pick files by their `glob`; there is no `match` on names).
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
    /// The CSV rows journaled as `failed`, in order: what the sender must fix and send again.
    pub failures: Vec<RowFailure>,
}

/// One CSV row that could not be read as a row (journaled as `failed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFailure {
    pub id: TxId,
    /// 1-based line where the row starts.
    pub line: u64,
    /// Why, as the journal says it (a line and a field count or limit; never the row's text).
    pub reason: String,
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
    /// The file cannot be taken as a whole (a CSV file with no data rows or a broken header;
    /// rows before a fatal error are journaled). Parts that do not parse are journaled as
    /// `failed` and counted in [`Accepted::failed`] instead.
    #[error("{reason}")]
    Refused { reason: String },
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
        let mut accepted = Accepted {
            already: true,
            ..Accepted::default()
        };
        match doc.format {
            Format::Hl7v2 => {
                let parts: Vec<Bytes> = match crate::hl7::split_batch(&bytes) {
                    Ok(parts) if !parts.is_empty() => {
                        parts.iter().map(|p| bytes.slice_ref(p)).collect()
                    }
                    _ => vec![bytes.clone()],
                };
                let several = parts.len() > 1;
                // Submitted with a window in flight, so a batch file shares group commits
                // instead of waiting for one fsync a message.
                let mut in_flight = FuturesOrdered::new();
                for (n, part) in parts.into_iter().enumerate() {
                    in_flight.push_back(self.submit_hl7(part, arrival(several.then_some(n + 1))));
                    if in_flight.len() >= WINDOW {
                        if let Some(reply) = in_flight.next().await {
                            accepted.add(Part::of_ack(reply)?);
                        }
                    }
                }
                while let Some(reply) = in_flight.next().await {
                    accepted.add(Part::of_ack(reply)?);
                }
            }
            format => {
                let facts = crate::format::facts(format, &bytes);
                let reply = self.submit_document(facts, bytes, arrival(None)).await?;
                accepted.add(Part::of_document(&reply));
            }
        }
        Ok(accepted)
    }

    /// CSV: one transaction per row (the header line and the row), streamed from the file so
    /// that memory stays flat whatever its size. Rows are appended with a window of
    /// [`WINDOW`] in flight, so they share the journal's group commits. A malformed row is
    /// journaled as `failed` with its line; a file that cannot be read at all is refused.
    async fn accept_csv(&self, doc: Document) -> Result<Accepted, IngestError> {
        let mut options = self.csv_options();
        if let Some(encoding) = doc.charset {
            options.encoding = encoding;
        }
        let (rows_tx, mut rows) = tokio::sync::mpsc::channel::<CsvItem>(WINDOW);
        let body = doc.body;
        let reader = tokio::task::spawn_blocking(move || -> Result<(), IngestError> {
            let input: Box<dyn std::io::Read> = match body {
                Body::Bytes(b) => Box::new(std::io::Cursor::new(b)),
                Body::File(path) => match std::fs::File::open(&path) {
                    Ok(f) => Box::new(f),
                    Err(source) => return Err(IngestError::Read { path, source }),
                },
            };
            for item in crate::format::csv::journal_rows(input, &options) {
                let item = match item {
                    Ok(row) => CsvItem::Row(row.line, Bytes::from(row.bytes)),
                    Err(e) if e.is_row_error() => {
                        CsvItem::Bad(e.line().unwrap_or(0), e.to_string())
                    }
                    Err(e) => CsvItem::Fatal(e.to_string()),
                };
                let fatal = matches!(item, CsvItem::Fatal(_));
                if rows_tx.blocking_send(item).is_err() || fatal {
                    break;
                }
            }
            Ok(())
        });
        let origin = doc.origin;
        let name = origin.name.clone().unwrap_or_else(|| "csv".into());
        let mut accepted = Accepted {
            already: true,
            ..Accepted::default()
        };
        let mut in_flight = FuturesOrdered::new();
        let mut fatal = None;
        loop {
            let next = rows.recv().await;
            let Some(item) = next else { break };
            let (line, raw, refused) = match item {
                CsvItem::Row(line, raw) => (line, raw, None),
                CsvItem::Bad(line, reason) => (line, Bytes::new(), Some(reason)),
                CsvItem::Fatal(reason) => {
                    fatal = Some(reason);
                    break;
                }
            };
            let bad = refused.as_ref().map(|reason| (line, reason.clone()));
            let facts = crate::format::DocumentFacts {
                format: Format::Csv,
                kind: Some("CSV".into()),
                refused,
                ..Default::default()
            };
            let arrival = Arrival {
                peer: origin.peer.clone(),
                origin: Some(format!("{name}#{line}")),
                origin_key: origin.key.as_ref().map(|k| format!("{k}#{line}")),
            };
            let reply = self.submit_document(facts, raw, arrival);
            in_flight.push_back(async move { (reply.await, bad) });
            if in_flight.len() >= WINDOW {
                if let Some((reply, bad)) = in_flight.next().await {
                    accepted.add_row(&reply?, bad);
                }
            }
        }
        while let Some((reply, bad)) = in_flight.next().await {
            accepted.add_row(&reply?, bad);
        }
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(IngestError::Refused {
                    reason: format!("CSV reader stopped: {e}"),
                })
            }
        }
        if let Some(reason) = fatal {
            // Rows before the error are journaled; the file as a whole is refused.
            return Err(IngestError::Refused { reason });
        }
        if accepted.ids.is_empty() {
            return Err(IngestError::Refused {
                reason: "the CSV file has no data rows".into(),
            });
        }
        Ok(accepted)
    }
}

/// Parts of one document (HL7 messages of a batch, CSV rows) appended at once.
const WINDOW: usize = 256;

/// One item of a CSV file on its way to the journal.
enum CsvItem {
    Row(u64, Bytes),
    Bad(u64, String),
    Fatal(String),
}

/// One journaled part of a document, as [`Accepted`] counts it.
struct Part {
    id: TxId,
    failed: bool,
    already: bool,
}

impl Part {
    /// An HL7 message's answer; no transaction means the journal did not take it.
    fn of_ack(reply: crate::intake::AckReply) -> Result<Part, IngestError> {
        let id = reply.id.ok_or(IngestError::Journal(JournalError::Closed))?;
        Ok(Part {
            id,
            failed: reply.code != crate::hl7::AckCode::Accept,
            already: reply.already,
        })
    }

    fn of_document(reply: &crate::intake::DocumentReply) -> Part {
        Part {
            id: reply.id,
            failed: reply.refused.is_some(),
            already: reply.already,
        }
    }
}

impl Accepted {
    /// A CSV row; `bad`: its line and why it was journaled as `failed`.
    fn add_row(&mut self, reply: &crate::intake::DocumentReply, bad: Option<(u64, String)>) {
        if let Some((line, reason)) = bad {
            self.failures.push(RowFailure {
                id: reply.id,
                line,
                reason,
            });
        }
        self.add(Part::of_document(reply));
    }

    fn add(&mut self, part: Part) {
        self.ids.push(part.id);
        self.already &= part.already;
        if part.failed {
            self.failed += 1;
        }
    }
}
