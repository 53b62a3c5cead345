//! The kinds of documents Orbiter takes in besides (and including) HL7 v2, and how each is
//! recognised. Parsers for each live in their own file here.

use serde::{Deserialize, Serialize};

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

    /// The format an HTTP `Content-Type` names (parameters such as `charset` ignored).
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/hl7-v2" | "x-application/hl7-v2+er7" | "text/plain" => Some(Format::Hl7v2),
            "application/fhir+json" | "application/json" => Some(Format::Fhir),
            "application/xml" | "application/cda+xml" | "text/xml" => Some(Format::Ccda),
            "text/csv" => Some(Format::Csv),
            _ => None,
        }
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
/// transform worker, from the journaled bytes).
pub fn facts(format: Format, raw: &[u8]) -> DocumentFacts {
    let mut facts = DocumentFacts {
        format,
        ..DocumentFacts::default()
    };
    match format {
        Format::Hl7v2 => facts.kind = Some("HL7v2".into()),
        Format::Fhir => match serde_json::from_slice::<serde_json::Value>(raw) {
            Err(e) => facts.refused = Some(format!("not FHIR JSON: {e}")),
            Ok(value) => match value.get("resourceType").and_then(|v| v.as_str()) {
                None => facts.refused = Some("not a FHIR resource: no resourceType".into()),
                Some(kind) => {
                    facts.kind = Some(kind.to_string());
                    facts.control_id = value.get("id").and_then(|v| v.as_str()).map(String::from);
                }
            },
        },
        Format::Ccda => {
            let text = String::from_utf8_lossy(&raw[..raw.len().min(4096)]);
            if text.contains("<ClinicalDocument") {
                facts.kind = Some("ClinicalDocument".into());
            } else {
                facts.refused = Some("not a C-CDA document: no ClinicalDocument root".into());
            }
        }
        Format::Csv => facts.kind = Some("CSV".into()),
    }
    facts
}

/// What a channel's script sees as `msg` for a document of this format (HL7 v2 has its own
/// message object; see [`crate::script::ScriptInput`]).
pub fn script_value(format: Format, raw: &[u8]) -> Result<rhai::Dynamic, String> {
    match format {
        Format::Fhir => {
            let value: serde_json::Value =
                serde_json::from_slice(raw).map_err(|e| format!("not FHIR JSON: {e}"))?;
            rhai::serde::to_dynamic(value).map_err(|e| format!("FHIR JSON for the script: {e}"))
        }
        other => Err(format!("{other} documents cannot be given to scripts yet")),
    }
}
