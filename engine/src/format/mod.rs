//! The kinds of documents Orbiter takes in besides (and including) HL7 v2, and how each is
//! recognised. Parsers for each live in their own file here:
//!
//! - [`xml`]: a safe XML tree (no DTDs, bounded size and depth) with path queries;
//! - [`ccda`]: C-CDA documents on top of it: the script value and the header summary;
//! - [`csv`]: CSV flat files streamed row by row with a hard row-size limit;
//! - [`fhir`]: FHIR JSON: structural checks, batch/collection → transaction.

pub mod ccda;
pub mod csv;
pub mod fhir;
pub mod xml;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

/// Why a journaled body could not become a script's `msg`.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("C-CDA: {0}")]
    Ccda(#[from] ccda::CcdaError),
    #[error("CSV: {0}")]
    Csv(#[from] csv::CsvError),
    #[error("FHIR: {0}")]
    Fhir(#[from] fhir::FhirInputError),
    /// HL7 v2 has its own path (`hl7::Message` and `ScriptHost::run_transform`).
    #[error("HL7 v2 messages are run with ScriptHost::run_transform, not as a value")]
    Hl7v2,
}

/// The script's `msg` for a journaled body of a non-HL7 format: a C-CDA document's root node,
/// a CSV row's map (the body is one journaled row, see [`csv::row_bytes`]), a FHIR resource or
/// Bundle's map (a transaction first when `fhir.as_transaction`). Run it with
/// `ScriptHost::run_transform_value(ast, msg, raw, ctx)`, passing the same bytes as `raw`.
pub fn script_input(
    format: Format,
    raw: &[u8],
    csv_options: &csv::CsvOptions,
    fhir_options: &fhir::FhirOptions,
) -> Result<rhai::Dynamic, FormatError> {
    match format {
        Format::Ccda => Ok(ccda::to_script(raw)?),
        Format::Csv => Ok(csv::to_script(raw, csv_options)?),
        Format::Fhir => Ok(fhir::to_script_with(raw, fhir_options)?),
        Format::Hl7v2 => Err(FormatError::Hl7v2),
    }
}

/// What a journaled message is. Decides how it is parsed for routing and what a channel's
/// script sees as `msg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// HL7 v2 (ER7): `msg` is the message with path access.
    #[default]
    Hl7v2,
    /// A FHIR R4 resource or Bundle in JSON: `msg` is the resource as a map.
    Fhir,
    /// A C-CDA R2.1 document (XML): `msg` is the document tree with path helpers.
    Ccda,
    /// One row of a CSV flat file: `msg` is a map from header to value.
    Csv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Hl7v2 => "hl7v2",
            Format::Fhir => "fhir",
            Format::Ccda => "ccda",
            Format::Csv => "csv",
        }
    }

    /// Every format, in the order refusals list them.
    pub const ALL: [Format; 4] = [Format::Hl7v2, Format::Fhir, Format::Ccda, Format::Csv];

    /// The HTTP `Content-Type`s (without parameters) that name this format.
    pub fn content_types(self) -> &'static [&'static str] {
        match self {
            Format::Hl7v2 => &[
                "application/hl7-v2",
                "x-application/hl7-v2+er7",
                "text/plain",
            ],
            Format::Fhir => &["application/fhir+json", "application/json"],
            Format::Ccda => &["application/xml", "application/cda+xml", "text/xml"],
            Format::Csv => &["text/csv"],
        }
    }

    /// The format an HTTP `Content-Type` names (parameters such as `charset` ignored).
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Format::ALL
            .into_iter()
            .find(|f| f.content_types().contains(&essence.as_str()))
    }

    /// A guess from a file name's extension, for folder and SFTP sources without a `format`.
    pub fn from_file_name(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "hl7" | "er7" | "txt" | "msg" => Some(Format::Hl7v2),
            "json" => Some(Format::Fhir),
            "xml" | "cda" | "ccd" | "ccda" => Some(Format::Ccda),
            "csv" | "tsv" => Some(Format::Csv),
            _ => None,
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What routing and the journal's metadata need from a document, read once at intake.
#[derive(Debug, Clone, Default)]
pub struct DocumentFacts {
    pub format: Format,
    /// Matched by a channel's `match.message_type`: a FHIR resource type (`Bundle`,
    /// `Patient`), `ClinicalDocument` for C-CDA, `CSV` for a flat-file row.
    pub kind: Option<String>,
    /// The document's own id (Bundle.id / identifier, C-CDA `id`), for search.
    pub control_id: Option<String>,
    /// Per-patient ordering key, when the document names one patient.
    pub patient_key: Option<String>,
    /// Why the bytes are not a well-formed document of this format.
    pub refused: Option<String>,
}

/// Reads the facts of one document (the structure a script will see is built later, in the
/// transform worker, from the journaled bytes). A document that does not parse or fails the
/// format's structural checks is `refused`, with the reason (a JSON path, an XML line).
pub fn facts(format: Format, raw: &[u8]) -> DocumentFacts {
    let mut facts = DocumentFacts {
        format,
        ..DocumentFacts::default()
    };
    match format {
        Format::Hl7v2 => facts.kind = Some("HL7v2".into()),
        Format::Fhir => match fhir::parse(raw) {
            Err(e) => facts.refused = Some(format!("not a valid FHIR document: {e}")),
            Ok(value) => {
                let meta = fhir::summary(&value);
                facts.kind = Some(meta.resource_type);
                facts.control_id = meta.id;
            }
        },
        Format::Ccda => match ccda::parse(raw) {
            Err(e) => facts.refused = Some(format!("not a C-CDA document: {e}")),
            Ok(doc) => {
                let meta = ccda::summary(&doc);
                facts.kind = Some(meta.document_type);
                facts.control_id = meta.document_id;
                facts.patient_key = meta.patient_id.and_then(|p| {
                    let id = p.extension?;
                    Some(crate::intake::patient_key_of(&id, &p.root))
                });
            }
        },
        Format::Csv => facts.kind = Some("CSV".into()),
    }
    facts
}
