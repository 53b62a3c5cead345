//! Search parameters: which ones each resource type has and where their values are.
//!
//! One table drives indexing (which values of a resource go into the index when it is written),
//! search (which parameters a query may use, and their types) and the CapabilityStatement (which
//! parameters are advertised), so the three cannot disagree. Paths are dotted element paths with
//! arrays flattened at every step; choice elements (`effective[x]`) are listed once per type
//! (`effectiveDateTime`, `effectivePeriod`). The definitions follow the R4 search parameter
//! registry for the common resource types.

use serde_json::Value;

use super::datetime::{self, Range};
use super::validate::is_resource_type;

/// A search parameter's type (R4 `SearchParamType`), for those the CDR supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// Case- and accent-insensitive starts-with; `:exact`, `:contains`.
    String,
    /// `system|code`, `code`, `|code`, `system|`; `:not`.
    Token,
    /// `Type/id`, `id`, absolute URL; `:Type`.
    Reference,
    /// Ranges with prefixes `eq ne gt lt ge le sa eb ap`.
    Date,
}

impl ParamType {
    /// The R4 code of the type, for the CapabilityStatement.
    pub fn code(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Date => "date",
        }
    }
}

/// One search parameter of one resource type.
#[derive(Debug)]
pub struct ParamDef {
    /// The parameter's name in a query (`birthdate`).
    pub name: &'static str,
    /// Its type.
    pub kind: ParamType,
    /// Where its values are (`name.family`, `effectivePeriod`).
    pub paths: &'static [&'static str],
    /// For references: only references to this type count (`patient` is `subject` to a Patient).
    pub target: Option<&'static str>,
}

const fn s(name: &'static str, paths: &'static [&'static str]) -> ParamDef {
    ParamDef {
        name,
        kind: ParamType::String,
        paths,
        target: None,
    }
}
const fn t(name: &'static str, paths: &'static [&'static str]) -> ParamDef {
    ParamDef {
        name,
        kind: ParamType::Token,
        paths,
        target: None,
    }
}
const fn r(name: &'static str, paths: &'static [&'static str]) -> ParamDef {
    ParamDef {
        name,
        kind: ParamType::Reference,
        paths,
        target: None,
    }
}
const fn rt(name: &'static str, paths: &'static [&'static str], target: &'static str) -> ParamDef {
    ParamDef {
        name,
        kind: ParamType::Reference,
        paths,
        target: Some(target),
    }
}
const fn d(name: &'static str, paths: &'static [&'static str]) -> ParamDef {
    ParamDef {
        name,
        kind: ParamType::Date,
        paths,
        target: None,
    }
}

/// Parameters every resource type has (`_id` is answered from the primary key, not from here).
pub const COMMON: &[ParamDef] = &[
    d("_lastUpdated", &["meta.lastUpdated"]),
    t("_tag", &["meta.tag"]),
    t("_security", &["meta.security"]),
];

const IDENTIFIER: ParamDef = t("identifier", &["identifier"]);
const SUBJECT: ParamDef = r("subject", &["subject"]);
const PATIENT_SUBJECT: ParamDef = rt("patient", &["subject"], "Patient");
const ENCOUNTER: ParamDef = r("encounter", &["encounter"]);
const STATUS: ParamDef = t("status", &["status"]);
const CODE: ParamDef = t("code", &["code"]);
const CATEGORY: ParamDef = t("category", &["category"]);
const HUMAN_NAME: ParamDef = s("name", &["name"]);
const FAMILY: ParamDef = s("family", &["name.family"]);
const GIVEN: ParamDef = s("given", &["name.given"]);
const GENDER: ParamDef = t("gender", &["gender"]);
const BIRTHDATE: ParamDef = d("birthdate", &["birthDate"]);
const ACTIVE: ParamDef = t("active", &["active"]);
const TELECOM: ParamDef = t("telecom", &["telecom"]);
const ADDRESS: ParamDef = s("address", &["address"]);
const BASED_ON: ParamDef = r("based-on", &["basedOn"]);
const PART_OF: ParamDef = r("part-of", &["partOf"]);
const CLINICAL_STATUS: ParamDef = t("clinical-status", &["clinicalStatus"]);
const VERIFICATION_STATUS: ParamDef = t("verification-status", &["verificationStatus"]);
const INTENT: ParamDef = t("intent", &["intent"]);
const REASON_CODE: ParamDef = t("reason-code", &["reasonCode"]);

/// The type-specific parameters of `ty` (without [`COMMON`]).
pub fn type_params(ty: &str) -> &'static [ParamDef] {
    match ty {
        "Patient" => {
            const {
                &[
                    IDENTIFIER,
                    HUMAN_NAME,
                    FAMILY,
                    GIVEN,
                    BIRTHDATE,
                    GENDER,
                    ACTIVE,
                    TELECOM,
                    ADDRESS,
                    s("address-city", &["address.city"]),
                    s("address-postalcode", &["address.postalCode"]),
                    rt("organization", &["managingOrganization"], "Organization"),
                    r("general-practitioner", &["generalPractitioner"]),
                    d("death-date", &["deceasedDateTime"]),
                ]
            }
        }
        "Encounter" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    SUBJECT,
                    PATIENT_SUBJECT,
                    BASED_ON,
                    PART_OF,
                    REASON_CODE,
                    t("class", &["class"]),
                    t("type", &["type"]),
                    d("date", &["period"]),
                    r("participant", &["participant.individual"]),
                    rt("practitioner", &["participant.individual"], "Practitioner"),
                    r("location", &["location.location"]),
                    r("service-provider", &["serviceProvider"]),
                    r("episode-of-care", &["episodeOfCare"]),
                ]
            }
        }
        "Observation" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    CODE,
                    CATEGORY,
                    SUBJECT,
                    PATIENT_SUBJECT,
                    ENCOUNTER,
                    BASED_ON,
                    PART_OF,
                    d(
                        "date",
                        &["effectiveDateTime", "effectivePeriod", "effectiveInstant"],
                    ),
                    r("performer", &["performer"]),
                    r("specimen", &["specimen"]),
                    r("has-member", &["hasMember"]),
                    r("derived-from", &["derivedFrom"]),
                    t("value-concept", &["valueCodeableConcept"]),
                    s("value-string", &["valueString"]),
                    t("component-code", &["component.code"]),
                ]
            }
        }
        "DiagnosticReport" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    CODE,
                    CATEGORY,
                    SUBJECT,
                    PATIENT_SUBJECT,
                    ENCOUNTER,
                    BASED_ON,
                    d("date", &["effectiveDateTime", "effectivePeriod"]),
                    d("issued", &["issued"]),
                    r("result", &["result"]),
                    r("performer", &["performer"]),
                    r("specimen", &["specimen"]),
                ]
            }
        }
        "Condition" => {
            const {
                &[
                    IDENTIFIER,
                    CODE,
                    CATEGORY,
                    CLINICAL_STATUS,
                    VERIFICATION_STATUS,
                    SUBJECT,
                    PATIENT_SUBJECT,
                    ENCOUNTER,
                    t("severity", &["severity"]),
                    d("onset-date", &["onsetDateTime", "onsetPeriod"]),
                    d("recorded-date", &["recordedDate"]),
                    r("asserter", &["asserter"]),
                ]
            }
        }
        "AllergyIntolerance" => {
            const {
                &[
                    IDENTIFIER,
                    CLINICAL_STATUS,
                    VERIFICATION_STATUS,
                    CATEGORY,
                    t("code", &["code", "reaction.substance"]),
                    rt("patient", &["patient"], "Patient"),
                    d("date", &["recordedDate"]),
                    t("criticality", &["criticality"]),
                    t("type", &["type"]),
                    r("recorder", &["recorder"]),
                    r("asserter", &["asserter"]),
                ]
            }
        }
        "Immunization" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    REASON_CODE,
                    t("vaccine-code", &["vaccineCode"]),
                    rt("patient", &["patient"], "Patient"),
                    d("date", &["occurrenceDateTime"]),
                    s("lot-number", &["lotNumber"]),
                    r("location", &["location"]),
                    r("manufacturer", &["manufacturer"]),
                    r("performer", &["performer.actor"]),
                ]
            }
        }
        "MedicationStatement" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    CATEGORY,
                    SUBJECT,
                    PATIENT_SUBJECT,
                    PART_OF,
                    t("code", &["medicationCodeableConcept"]),
                    r("medication", &["medicationReference"]),
                    r("context", &["context"]),
                    d("effective", &["effectiveDateTime", "effectivePeriod"]),
                    r("source", &["informationSource"]),
                ]
            }
        }
        "MedicationRequest" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    INTENT,
                    CATEGORY,
                    SUBJECT,
                    PATIENT_SUBJECT,
                    ENCOUNTER,
                    t("code", &["medicationCodeableConcept"]),
                    r("medication", &["medicationReference"]),
                    d("authoredon", &["authoredOn"]),
                    r("requester", &["requester"]),
                    r("intended-performer", &["performer"]),
                    t("priority", &["priority"]),
                ]
            }
        }
        "Procedure" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    CODE,
                    SUBJECT,
                    PATIENT_SUBJECT,
                    ENCOUNTER,
                    BASED_ON,
                    PART_OF,
                    REASON_CODE,
                    t("category", &["category"]),
                    d("date", &["performedDateTime", "performedPeriod"]),
                    r("performer", &["performer.actor"]),
                    r("location", &["location"]),
                ]
            }
        }
        "ServiceRequest" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    INTENT,
                    CODE,
                    CATEGORY,
                    SUBJECT,
                    PATIENT_SUBJECT,
                    ENCOUNTER,
                    BASED_ON,
                    d("authored", &["authoredOn"]),
                    d("occurrence", &["occurrenceDateTime", "occurrencePeriod"]),
                    r("requester", &["requester"]),
                    r("performer", &["performer"]),
                    t("requisition", &["requisition"]),
                    r("specimen", &["specimen"]),
                    t("priority", &["priority"]),
                ]
            }
        }
        "Specimen" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    SUBJECT,
                    PATIENT_SUBJECT,
                    t("accession", &["accessionIdentifier"]),
                    t("type", &["type"]),
                    d(
                        "collected",
                        &["collection.collectedDateTime", "collection.collectedPeriod"],
                    ),
                    r("parent", &["parent"]),
                ]
            }
        }
        "Practitioner" => {
            const {
                &[
                    IDENTIFIER, HUMAN_NAME, FAMILY, GIVEN, GENDER, ACTIVE, TELECOM, ADDRESS,
                ]
            }
        }
        "Organization" => {
            const {
                &[
                    IDENTIFIER,
                    ACTIVE,
                    ADDRESS,
                    s("name", &["name", "alias"]),
                    t("type", &["type"]),
                    r("partof", &["partOf"]),
                ]
            }
        }
        "Location" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    ADDRESS,
                    s("name", &["name", "alias"]),
                    t("type", &["type"]),
                    r("organization", &["managingOrganization"]),
                    r("partof", &["partOf"]),
                ]
            }
        }
        "RelatedPerson" => {
            const {
                &[
                    IDENTIFIER,
                    HUMAN_NAME,
                    GENDER,
                    BIRTHDATE,
                    ACTIVE,
                    TELECOM,
                    ADDRESS,
                    rt("patient", &["patient"], "Patient"),
                    t("relationship", &["relationship"]),
                ]
            }
        }
        "Coverage" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    t("type", &["type"]),
                    r("beneficiary", &["beneficiary"]),
                    rt("patient", &["beneficiary"], "Patient"),
                    r("subscriber", &["subscriber"]),
                    r("payor", &["payor"]),
                    r("policy-holder", &["policyHolder"]),
                ]
            }
        }
        "Appointment" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    BASED_ON,
                    d("date", &["start"]),
                    r("actor", &["participant.actor"]),
                    rt("patient", &["participant.actor"], "Patient"),
                    rt("practitioner", &["participant.actor"], "Practitioner"),
                    rt("location", &["participant.actor"], "Location"),
                    t("service-type", &["serviceType"]),
                    t("appointment-type", &["appointmentType"]),
                ]
            }
        }
        "DocumentReference" => {
            const {
                &[
                    STATUS,
                    SUBJECT,
                    PATIENT_SUBJECT,
                    CATEGORY,
                    t("identifier", &["masterIdentifier", "identifier"]),
                    t("type", &["type"]),
                    r("encounter", &["context.encounter"]),
                    d("date", &["date"]),
                    d("period", &["context.period"]),
                    r("author", &["author"]),
                    r("custodian", &["custodian"]),
                    r("related", &["context.related"]),
                ]
            }
        }
        "Composition" => {
            const {
                &[
                    IDENTIFIER,
                    STATUS,
                    CATEGORY,
                    SUBJECT,
                    PATIENT_SUBJECT,
                    ENCOUNTER,
                    t("type", &["type"]),
                    d("date", &["date"]),
                    r("author", &["author"]),
                    s("title", &["title"]),
                    r("attester", &["attester.party"]),
                ]
            }
        }
        "Provenance" => {
            const {
                &[
                    r("target", &["target"]),
                    rt("patient", &["target"], "Patient"),
                    d("recorded", &["recorded"]),
                    d("when", &["occurredDateTime", "occurredPeriod"]),
                    r("agent", &["agent.who"]),
                    r("entity", &["entity.what"]),
                    r("location", &["location"]),
                ]
            }
        }
        "MessageHeader" => {
            const {
                &[
                    t("event", &["eventCoding", "eventUri"]),
                    r("focus", &["focus"]),
                    r("sender", &["sender"]),
                    r("author", &["author"]),
                    t("code", &["response.code"]),
                    t("response-id", &["response.identifier"]),
                ]
            }
        }
        _ => &[],
    }
}

/// The parameter `name` of `ty`, if the CDR supports it.
pub fn find(ty: &str, name: &str) -> Option<&'static ParamDef> {
    COMMON
        .iter()
        .chain(type_params(ty).iter())
        .find(|p| p.name == name)
}

/// The parameter whose index entries answer `def` on `ty`, when `def` has none of its own:
///
/// - a reference parameter restricted to one type (`patient`): the unrestricted parameter on
///   the same elements (`subject`), whose keys carry the type;
/// - a string parameter on parts of a HumanName or an Address (`family`, `given`,
///   `address-city`, `address-postalcode`): the parameter on the whole element (`name`,
///   `address`), whose values include every part. Its candidates are a superset (a `given`
///   that starts like the family searched for), so they are checked on the resources
///   ([`is_part_alias`]).
///
/// Each index key costs a sled insert (several microseconds, and a leaf split every few), so
/// one set of keys answering both saves a fifth of a Patient's keys.
pub fn alias_of(ty: &str, def: &ParamDef) -> Option<&'static ParamDef> {
    match def.kind {
        ParamType::Reference => {
            def.target?;
            type_params(ty).iter().find(|p| {
                p.kind == ParamType::Reference && p.target.is_none() && p.paths == def.paths
            })
        }
        ParamType::String => type_params(ty).iter().find(|whole| {
            whole.kind == ParamType::String
                && whole.name != def.name
                && def.paths.iter().all(|path| {
                    whole.paths.iter().any(|w| {
                        path.strip_prefix(w)
                            .and_then(|rest| rest.strip_prefix('.'))
                            .is_some_and(|part| STRING_PARTS.contains(&part))
                    })
                })
        }),
        ParamType::Token | ParamType::Date => None,
    }
}

/// Whether `def` is answered from the keys of a wider string parameter (see [`alias_of`]), so
/// that what those keys find must be checked against `def` on the resource.
pub fn is_part_alias(ty: &str, def: &ParamDef) -> bool {
    def.kind == ParamType::String && alias_of(ty, def).is_some()
}

/// Every parameter of `ty`.
pub fn all(ty: &str) -> impl Iterator<Item = &'static ParamDef> {
    COMMON.iter().chain(type_params(ty).iter())
}

/// One value of one parameter of one resource, as indexed and as matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexValue {
    /// A string, as written (normalised when keyed).
    Str(String),
    /// A token: system (if any) and code.
    Token(Option<String>, String),
    /// A reference, normalised ([`normalize_reference`]).
    Ref(String),
    /// A date range.
    Date(Range),
}

/// The code system a `code`-typed element's values come from (its required binding), for the
/// token parameters on such elements: `gender=http://hl7.org/fhir/administrative-gender|female`
/// must find what `gender=female` finds, as on HAPI, though the resource holds a bare code.
pub fn code_system(ty: &str, param: &str) -> Option<&'static str> {
    Some(match (ty, param) {
        ("Patient" | "RelatedPerson" | "Practitioner" | "Person", "gender") => {
            "http://hl7.org/fhir/administrative-gender"
        }
        ("Observation", "status") => "http://hl7.org/fhir/observation-status",
        ("Encounter", "status") => "http://hl7.org/fhir/encounter-status",
        ("DiagnosticReport", "status") => "http://hl7.org/fhir/diagnostic-report-status",
        ("ServiceRequest" | "CarePlan", "status") => "http://hl7.org/fhir/request-status",
        ("ServiceRequest" | "CarePlan", "intent") => "http://hl7.org/fhir/request-intent",
        ("Immunization" | "Procedure", "status") => "http://hl7.org/fhir/event-status",
        ("DocumentReference", "status") => "http://hl7.org/fhir/document-reference-status",
        ("Composition", "status") => "http://hl7.org/fhir/composition-status",
        ("Appointment", "status") => "http://hl7.org/fhir/appointmentstatus",
        ("Coverage", "status") => "http://hl7.org/fhir/fm-status",
        ("Specimen", "status") => "http://hl7.org/fhir/specimen-status",
        ("Location", "status") => "http://hl7.org/fhir/location-status",
        ("Task", "status") => "http://hl7.org/fhir/task-status",
        ("AllergyIntolerance", "criticality") => {
            "http://hl7.org/fhir/allergy-intolerance-criticality"
        }
        ("AllergyIntolerance", "type") => "http://hl7.org/fhir/allergy-intolerance-type",
        ("MedicationRequest", "status") => {
            "http://hl7.org/fhir/CodeSystem/medicationrequest-status"
        }
        ("MedicationRequest", "intent") => {
            "http://hl7.org/fhir/CodeSystem/medicationrequest-intent"
        }
        ("MedicationStatement", "status") => {
            "http://hl7.org/fhir/CodeSystem/medication-statement-status"
        }
        _ => return None,
    })
}

/// The values of parameter `def` in `resource`.
pub fn extract(def: &ParamDef, resource: &Value) -> Vec<IndexValue> {
    let mut leaves = Vec::new();
    for path in def.paths {
        collect(resource, path, &mut leaves);
    }
    let bound = match def.kind {
        ParamType::Token => resource
            .get("resourceType")
            .and_then(Value::as_str)
            .and_then(|ty| code_system(ty, def.name)),
        _ => None,
    };
    let mut out = Vec::new();
    for leaf in leaves {
        match def.kind {
            ParamType::String => strings(leaf, &mut out),
            ParamType::Token => tokens(leaf, bound, &mut out),
            ParamType::Reference => {
                if let Some(r) = leaf.get("reference").and_then(Value::as_str) {
                    if let Some(norm) = normalize_reference(r) {
                        if def.target.is_none_or(|t| reference_type(&norm) == Some(t)) {
                            out.push(IndexValue::Ref(norm));
                        }
                    }
                }
            }
            ParamType::Date => {
                if let Some(range) = date_range(leaf) {
                    out.push(IndexValue::Date(range));
                }
            }
        }
    }
    out.dedup();
    out
}

/// Follows a dotted path, flattening arrays at every step.
fn collect<'a>(v: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let Some(next) = v.get(head) else { return };
    let items: Vec<&Value> = match next {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    for item in items {
        match rest {
            Some(r) => collect(item, r, out),
            None => out.push(item),
        }
    }
}

/// The parts of a HumanName or an Address a string search on the whole element looks at.
const STRING_PARTS: &[&str] = &[
    "text",
    "family",
    "given",
    "prefix",
    "suffix",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
];

fn strings(leaf: &Value, out: &mut Vec<IndexValue>) {
    match leaf {
        Value::String(s) => out.push(IndexValue::Str(s.clone())),
        Value::Object(o) => {
            // HumanName and Address: every part is searchable.
            for key in STRING_PARTS {
                match o.get(*key) {
                    Some(Value::String(s)) => out.push(IndexValue::Str(s.clone())),
                    Some(Value::Array(items)) => out.extend(
                        items
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|s| IndexValue::Str(s.to_string())),
                    ),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// `bound`: the code system of a `code` element's bare codes ([`code_system`]).
fn tokens(leaf: &Value, bound: Option<&str>, out: &mut Vec<IndexValue>) {
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match leaf {
        Value::String(s) => out.push(IndexValue::Token(bound.map(str::to_string), s.clone())),
        Value::Bool(b) => out.push(IndexValue::Token(None, b.to_string())),
        Value::Object(o) => {
            if let Some(Value::Array(codings)) = o.get("coding") {
                for c in codings {
                    if let Some(code) = str_of(c, "code") {
                        out.push(IndexValue::Token(str_of(c, "system"), code));
                    }
                }
            } else if let Some(code) = str_of(leaf, "code") {
                out.push(IndexValue::Token(str_of(leaf, "system"), code));
            } else if let Some(value) = str_of(leaf, "value") {
                out.push(IndexValue::Token(str_of(leaf, "system"), value));
            }
        }
        _ => {}
    }
}

/// The range of a date, dateTime, instant or Period value.
pub fn date_range(leaf: &Value) -> Option<Range> {
    match leaf {
        Value::String(s) => datetime::parse(s, datetime::Kind::DateTime),
        Value::Object(o) => {
            let low = o
                .get("start")
                .and_then(Value::as_str)
                .and_then(|s| datetime::parse(s, datetime::Kind::DateTime))
                .map(|r| r.low);
            let high = o
                .get("end")
                .and_then(Value::as_str)
                .and_then(|s| datetime::parse(s, datetime::Kind::DateTime))
                .map(|r| r.high);
            if low.is_none() && high.is_none() {
                return None;
            }
            Some(Range {
                low: low.unwrap_or(datetime::MIN),
                high: high.unwrap_or(datetime::MAX),
            })
        }
        _ => None,
    }
}

/// The form of a reference used in the index: `Type/id` for relative references (a version
/// suffix removed), absolute URLs without a version suffix, `urn:` as is. Local `#id`
/// references are not indexed.
pub fn normalize_reference(r: &str) -> Option<String> {
    if r.starts_with('#') || r.is_empty() {
        return None;
    }
    let base = match r.find("/_history/") {
        Some(i) => &r[..i],
        None => r,
    };
    Some(base.to_string())
}

/// The resource type of a normalised reference (`Patient/1`, `http://x/fhir/Patient/1`).
pub fn reference_type(norm: &str) -> Option<&str> {
    if norm.starts_with("urn:") {
        return None;
    }
    let mut segs = norm.rsplit('/');
    let _id = segs.next()?;
    let ty = segs.next()?;
    is_resource_type(ty).then_some(ty)
}

/// The id of a relative normalised reference (`Patient/1` → `1`).
pub fn reference_id(norm: &str) -> Option<&str> {
    match norm.split_once('/') {
        Some((ty, id)) if is_resource_type(ty) && !id.contains('/') => Some(id),
        _ => None,
    }
}

/// An absolute normalised reference split into base, type and id
/// (`http://x/fhir/Patient/1` → `("http://x/fhir", "Patient", "1")`); None for relative ones,
/// `urn:`s and URLs whose last segments are not `Type/id`.
pub fn split_absolute(norm: &str) -> Option<(&str, &str, &str)> {
    let mut segs = norm.rsplitn(3, '/');
    let (id, ty, base) = (segs.next()?, segs.next()?, segs.next()?);
    (base.contains("://") && is_resource_type(ty) && super::validate::valid_id(id))
        .then_some((base, ty, id))
}

/// Lower case, accents removed, control characters dropped: the form string search compares.
pub fn normalize_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.trim().chars().flat_map(char::to_lowercase) {
        match c {
            '\u{0300}'..='\u{036f}' => {} // combining marks of decomposed text
            c if c.is_control() => {}
            'ß' => out.push_str("ss"),
            'æ' => out.push_str("ae"),
            'œ' => out.push_str("oe"),
            'þ' => out.push_str("th"),
            c => out.push(fold(c)),
        }
    }
    out
}

fn fold(c: char) -> char {
    match c {
        'à'..='å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => 'c',
        'ď' | 'đ' | 'ð' => 'd',
        'è'..='ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => 'e',
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => 'g',
        'ĥ' | 'ħ' => 'h',
        'ì'..='ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => 'i',
        'ĵ' => 'j',
        'ķ' => 'k',
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => 'l',
        'ñ' | 'ń' | 'ņ' | 'ň' => 'n',
        'ò'..='ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => 'o',
        'ŕ' | 'ŗ' | 'ř' => 'r',
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => 's',
        'ţ' | 'ť' | 'ŧ' | 'ț' => 't',
        'ù'..='ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => 'u',
        'ŵ' => 'w',
        'ý' | 'ÿ' | 'ŷ' => 'y',
        'ź' | 'ż' | 'ž' => 'z',
        c => c,
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_is_consistent() {
        for ty in super::super::validate::R4_TYPES {
            let names: Vec<&str> = all(ty).map(|p| p.name).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len(), "duplicate parameter in {ty}");
        }
    }

    #[test]
    fn extraction() {
        let p = json!({
            "resourceType": "Patient",
            "name": [{"family": "Müller", "given": ["Zoë", "Ann"]}],
            "identifier": [{"system": "s", "value": "1"}, {"value": "2"}],
            "managingOrganization": {"reference": "Organization/o1/_history/3"},
            "generalPractitioner": [{"reference": "Practitioner/d"}, {"reference": "#x"}]
        });
        let name = find("Patient", "name").unwrap();
        assert_eq!(extract(name, &p).len(), 3);
        let id = find("Patient", "identifier").unwrap();
        assert_eq!(
            extract(id, &p),
            vec![
                IndexValue::Token(Some("s".into()), "1".into()),
                IndexValue::Token(None, "2".into())
            ]
        );
        let org = find("Patient", "organization").unwrap();
        assert_eq!(
            extract(org, &p),
            vec![IndexValue::Ref("Organization/o1".into())]
        );
        let gp = find("Patient", "general-practitioner").unwrap();
        assert_eq!(extract(gp, &p).len(), 1);
        assert_eq!(normalize_str(" ZOË Çà "), "zoe ca");
        assert_eq!(normalize_str("Zoe\u{0308}"), "zoe");
        assert_eq!(reference_type("http://x/fhir/Patient/1"), Some("Patient"));
        assert_eq!(reference_id("Patient/1"), Some("1"));
        let o = json!({"effectivePeriod": {"start": "2020-01-01"}});
        let date = find("Observation", "date").unwrap();
        match &extract(date, &o)[..] {
            [IndexValue::Date(r)] => assert_eq!(r.high, datetime::MAX),
            other => panic!("{other:?}"),
        }
    }
}
