//! C-CDA R2.1 documents: parsing (safely, see [`super::xml`]), the script value, and the
//! header summary the journal keeps for listing and routing.

use std::sync::Arc;

use rhai::Dynamic;
use serde::Serialize;

use super::xml::{self, XmlDoc, XmlError, XmlLimits};
use crate::script::xml::XmlNode;

/// Why a body is not a C-CDA document we take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CcdaError {
    #[error("not well-formed XML: {0}")]
    Xml(#[from] XmlError),
    #[error("the root element is <{0}>, not a CDA <ClinicalDocument> (namespace urn:hl7-org:v3)")]
    NotCda(String),
}

/// What the journal records about a document, from its header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CcdaMeta {
    /// A short name of the document template (`CCD`, `Discharge Summary`, ...), else the most
    /// specific `templateId/@root` (not the US Realm Header's), else the LOINC `code`.
    pub document_type: String,
    /// Every `templateId/@root` of the header, in order.
    pub template_ids: Vec<String>,
    /// `ClinicalDocument/code/@code` (LOINC, `34133-9` for a CCD).
    pub code: Option<String>,
    /// `ClinicalDocument/id` as `root` or `root^extension`: the document's identity.
    pub document_id: Option<String>,
    /// The first `recordTarget/patientRole/id`.
    pub patient_id: Option<PatientId>,
    pub title: Option<String>,
    /// `effectiveTime/@value` as sent (HL7 TS: `20261130101500-0500`).
    pub effective_time: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PatientId {
    /// The assigning authority's OID.
    pub root: String,
    pub extension: Option<String>,
}

/// C-CDA R2.1 document templates (`templateId/@root`) and their usual names.
const DOCUMENT_TEMPLATES: &[(&str, &str)] = &[
    ("2.16.840.1.113883.10.20.22.1.2", "CCD"),
    ("2.16.840.1.113883.10.20.22.1.3", "History and Physical"),
    ("2.16.840.1.113883.10.20.22.1.4", "Consultation Note"),
    (
        "2.16.840.1.113883.10.20.22.1.5",
        "Diagnostic Imaging Report",
    ),
    ("2.16.840.1.113883.10.20.22.1.6", "Procedure Note"),
    ("2.16.840.1.113883.10.20.22.1.7", "Operative Note"),
    ("2.16.840.1.113883.10.20.22.1.8", "Discharge Summary"),
    ("2.16.840.1.113883.10.20.22.1.9", "Progress Note"),
    ("2.16.840.1.113883.10.20.22.1.10", "Unstructured Document"),
    ("2.16.840.1.113883.10.20.22.1.13", "Transfer Summary"),
    ("2.16.840.1.113883.10.20.22.1.14", "Referral Note"),
    ("2.16.840.1.113883.10.20.22.1.15", "Care Plan"),
];
/// The US Realm Header: on every C-CDA document, so it says nothing about the kind.
const US_REALM_HEADER: &str = "2.16.840.1.113883.10.20.22.1.1";

/// Parses a C-CDA document with the default limits (32 MiB, depth 128).
pub fn parse(bytes: &[u8]) -> Result<XmlDoc, CcdaError> {
    parse_with(bytes, &XmlLimits::default())
}

/// Parses a C-CDA document; the root must be `ClinicalDocument` in the CDA namespace (or no
/// namespace: some senders omit it).
pub fn parse_with(bytes: &[u8], limits: &XmlLimits) -> Result<XmlDoc, CcdaError> {
    let doc = xml::parse(bytes, limits)?;
    let root = &doc.element(XmlDoc::ROOT).name;
    if root != "ClinicalDocument" {
        return Err(CcdaError::NotCda(root.clone()));
    }
    Ok(doc)
}

/// The script's `msg` for a C-CDA body: an `XmlNode` on `ClinicalDocument`.
pub fn to_script(bytes: &[u8]) -> Result<Dynamic, CcdaError> {
    Ok(doc_to_script(Arc::new(parse(bytes)?)))
}

/// The script's `msg` for an already parsed document (parse once for [`summary`] and the run).
pub fn doc_to_script(doc: Arc<XmlDoc>) -> Dynamic {
    Dynamic::from(XmlNode::root(doc))
}

fn nonblank(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The header facts of a parsed document.
pub fn summary(doc: &XmlDoc) -> CcdaMeta {
    let get = |path: &str| nonblank(doc.value(XmlDoc::ROOT, path).ok().flatten());
    let template_ids: Vec<String> = doc
        .select(XmlDoc::ROOT, "templateId/@root")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| doc.attr(t, "root").map(str::to_owned))
        .collect();
    let code = get("code/@code");
    let named = template_ids.iter().find_map(|t| {
        DOCUMENT_TEMPLATES
            .iter()
            .find(|(root, _)| root == t)
            .map(|(_, name)| (*name).to_owned())
    });
    let document_type = named
        .or_else(|| {
            template_ids
                .iter()
                .rev()
                .find(|t| t.as_str() != US_REALM_HEADER)
                .cloned()
        })
        .or_else(|| code.clone())
        .unwrap_or_default();
    let document_id = get("id/@root").map(|root| match get("id/@extension") {
        Some(ext) => format!("{root}^{ext}"),
        None => root,
    });
    let patient_id = doc
        .select(XmlDoc::ROOT, "recordTarget/patientRole/id[@root]")
        .unwrap_or_default()
        .first()
        .map(|id| PatientId {
            root: doc.attr(*id, "root").unwrap_or_default().to_owned(),
            extension: doc
                .attr(*id, "extension")
                .map(str::to_owned)
                .filter(|e| !e.trim().is_empty()),
        });
    CcdaMeta {
        document_type,
        template_ids,
        code,
        document_id,
        patient_id,
        title: get("title"),
        effective_time: get("effectiveTime/@value"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/ccda")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn summary_of_a_full_ccd() {
        let doc = parse(&fixture("ccd_full.xml")).unwrap();
        let meta = summary(&doc);
        assert_eq!(meta.document_type, "CCD");
        assert_eq!(meta.code.as_deref(), Some("34133-9"));
        assert!(meta.template_ids.contains(&US_REALM_HEADER.to_owned()));
        let pid = meta.patient_id.unwrap();
        assert_eq!(pid.root, "2.16.840.1.113883.19.5.99999.2");
        assert_eq!(pid.extension.as_deref(), Some("MRN-998991"));
        assert_eq!(meta.effective_time.as_deref(), Some("20261130101500-0500"));
        assert!(meta.title.unwrap().contains("Continuity of Care"));
        assert!(meta
            .document_id
            .unwrap()
            .starts_with("2.16.840.1.113883.19.5.99999.1^"));
    }

    #[test]
    fn summary_of_an_awkward_document() {
        let doc = parse(&fixture("ccd_awkward.xml")).unwrap();
        let meta = summary(&doc);
        assert_eq!(meta.document_type, "CCD");
        // The first patient id has a nullFlavor and no root: the one with a root is used.
        assert_eq!(
            meta.patient_id.unwrap().extension.as_deref(),
            Some("ÅSE-0042")
        );
    }

    #[test]
    fn not_a_clinical_document() {
        assert_eq!(
            parse(b"<Patient xmlns='http://hl7.org/fhir'/>").unwrap_err(),
            CcdaError::NotCda("Patient".into())
        );
        assert!(matches!(
            parse(b"<ClinicalDocument"),
            Err(CcdaError::Xml(XmlError::Syntax { .. }))
        ));
        let doc = parse(b"<ClinicalDocument xmlns='urn:hl7-org:v3'/>").unwrap();
        let meta = summary(&doc);
        assert_eq!(meta.document_type, "");
        assert_eq!(meta.patient_id, None);
    }
}
