//! FHIR R4 (4.0.1) as data: the resource types, the shapes of the common elements of the
//! common resource types, their required elements and required value sets.
//!
//! Kept apart from the checker ([`super::validate`]) because this is specification, not logic:
//! extending validation to another resource type means adding rows here. A type's table lists
//! every one of its elements (names not in it are refused), and so do the tables of the complex
//! datatypes; types and backbone elements without a table are checked generically (formats by
//! name, no nulls, no empty values).

use Ty::*;

/// Every resource type of FHIR R4 (4.0.1), sorted.
pub const R4_TYPES: [&str; 146] = [
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// Is `name` an R4 resource type?
pub fn is_resource_type(name: &str) -> bool {
    R4_TYPES.binary_search(&name).is_ok()
}

/// The JSON type an element must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// `string`: a non-empty JSON string.
    Str,
    /// `code`: a string without leading, trailing or double whitespace.
    Code,
    /// `uri`/`canonical`: a string without whitespace.
    Uri,
    /// `boolean`.
    Bool,
    /// `decimal`: a JSON number.
    Dec,
    /// `integer`/`positiveInt`/`unsignedInt`: a 32-bit JSON integer.
    Int,
    /// `date`.
    Date,
    /// `dateTime`.
    DateTime,
    /// `instant`.
    Instant,
    /// A backbone element: an object, checked generically.
    Obj,
    /// `Identifier`.
    Identifier,
    /// `CodeableConcept`.
    CodeableConcept,
    /// `Coding`.
    Coding,
    /// `Reference`.
    Reference,
    /// `HumanName`.
    HumanName,
    /// `Period` (start before end is checked too).
    Period,
    /// `ContactPoint`.
    ContactPoint,
    /// `Address`.
    Address,
    /// `Quantity`.
    Quantity,
}

/// One element of a type: its name, whether it repeats, its type.
pub struct F {
    /// The element's JSON name.
    pub name: &'static str,
    /// Whether it repeats (a JSON array).
    pub many: bool,
    /// Its type.
    pub ty: Ty,
}

const fn one(name: &'static str, ty: Ty) -> F {
    F {
        name,
        many: false,
        ty,
    }
}

const fn many(name: &'static str, ty: Ty) -> F {
    F {
        name,
        many: true,
        ty,
    }
}

/// The elements every resource has.
pub const RESOURCE: &[F] = &[
    one("resourceType", Code),
    one("id", Str),
    one("meta", Obj),
    one("implicitRules", Uri),
    one("language", Code),
    one("text", Obj),
    many("extension", Obj),
    many("modifierExtension", Obj),
];

const IDENTIFIER: &[F] = &[
    one("use", Code),
    one("type", CodeableConcept),
    one("system", Uri),
    one("value", Str),
    one("period", Period),
    one("assigner", Reference),
];
const CODEABLE_CONCEPT: &[F] = &[many("coding", Coding), one("text", Str)];
const CODING: &[F] = &[
    one("system", Uri),
    one("version", Str),
    one("code", Code),
    one("display", Str),
    one("userSelected", Bool),
];
const REFERENCE: &[F] = &[
    one("reference", Str),
    one("type", Uri),
    one("identifier", Identifier),
    one("display", Str),
];
const HUMAN_NAME: &[F] = &[
    one("use", Code),
    one("text", Str),
    one("family", Str),
    many("given", Str),
    many("prefix", Str),
    many("suffix", Str),
    one("period", Period),
];
const PERIOD: &[F] = &[one("start", DateTime), one("end", DateTime)];
const CONTACT_POINT: &[F] = &[
    one("system", Code),
    one("value", Str),
    one("use", Code),
    one("rank", Int),
    one("period", Period),
];
const ADDRESS: &[F] = &[
    one("use", Code),
    one("type", Code),
    one("text", Str),
    many("line", Str),
    one("city", Str),
    one("district", Str),
    one("state", Str),
    one("postalCode", Str),
    one("country", Str),
    one("period", Period),
];
const QUANTITY: &[F] = &[
    one("value", Dec),
    one("comparator", Code),
    one("unit", Str),
    one("system", Uri),
    one("code", Code),
];

/// The elements of a complex datatype (empty for primitives and backbone elements).
pub fn datatype_fields(ty: Ty) -> &'static [F] {
    match ty {
        Identifier => IDENTIFIER,
        CodeableConcept => CODEABLE_CONCEPT,
        Coding => CODING,
        Reference => REFERENCE,
        HumanName => HUMAN_NAME,
        Period => PERIOD,
        ContactPoint => CONTACT_POINT,
        Address => ADDRESS,
        Quantity => QUANTITY,
        _ => &[],
    }
}

/// All the elements of the common resource types (the base ones in [`RESOURCE`] aside), so that
/// a name not listed is refused; other types have no table (empty) and are checked generically.
/// Backbone elements are `Obj`: their names are not checked.
pub fn resource_fields(ty: &str) -> &'static [F] {
    match ty {
        "Patient" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("active", Bool),
                    many("name", HumanName),
                    many("telecom", ContactPoint),
                    one("gender", Code),
                    one("birthDate", Date),
                    one("deceasedBoolean", Bool),
                    one("deceasedDateTime", DateTime),
                    many("address", Address),
                    one("maritalStatus", CodeableConcept),
                    one("multipleBirthBoolean", Bool),
                    one("multipleBirthInteger", Int),
                    many("photo", Obj),
                    many("contact", Obj),
                    many("communication", Obj),
                    many("generalPractitioner", Reference),
                    one("managingOrganization", Reference),
                    many("link", Obj),
                ]
            }
        }
        "Encounter" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("status", Code),
                    many("statusHistory", Obj),
                    one("class", Coding),
                    many("classHistory", Obj),
                    many("type", CodeableConcept),
                    one("serviceType", CodeableConcept),
                    one("priority", CodeableConcept),
                    one("subject", Reference),
                    many("episodeOfCare", Reference),
                    many("basedOn", Reference),
                    many("participant", Obj),
                    many("appointment", Reference),
                    one("period", Period),
                    one("length", Quantity),
                    many("reasonCode", CodeableConcept),
                    many("reasonReference", Reference),
                    many("diagnosis", Obj),
                    many("account", Reference),
                    one("hospitalization", Obj),
                    many("location", Obj),
                    one("serviceProvider", Reference),
                    one("partOf", Reference),
                ]
            }
        }
        "Observation" => {
            const {
                &[
                    many("identifier", Identifier),
                    many("basedOn", Reference),
                    many("partOf", Reference),
                    one("status", Code),
                    many("category", CodeableConcept),
                    one("code", CodeableConcept),
                    one("subject", Reference),
                    many("focus", Reference),
                    one("encounter", Reference),
                    one("effectiveDateTime", DateTime),
                    one("effectivePeriod", Period),
                    one("effectiveInstant", Instant),
                    one("issued", Instant),
                    many("performer", Reference),
                    one("valueQuantity", Quantity),
                    one("valueCodeableConcept", CodeableConcept),
                    one("valueString", Str),
                    one("valueBoolean", Bool),
                    one("valueInteger", Int),
                    one("valuePeriod", Period),
                    one("valueDateTime", DateTime),
                    one("dataAbsentReason", CodeableConcept),
                    many("interpretation", CodeableConcept),
                    many("note", Obj),
                    one("bodySite", CodeableConcept),
                    one("method", CodeableConcept),
                    one("specimen", Reference),
                    one("device", Reference),
                    many("referenceRange", Obj),
                    many("hasMember", Reference),
                    many("derivedFrom", Reference),
                    many("component", Obj),
                    one("effectiveTiming", Obj),
                    one("valueRange", Obj),
                    one("valueRatio", Obj),
                    one("valueSampledData", Obj),
                    one("valueTime", Str),
                ]
            }
        }
        "DiagnosticReport" => {
            const {
                &[
                    many("identifier", Identifier),
                    many("basedOn", Reference),
                    one("status", Code),
                    many("category", CodeableConcept),
                    one("code", CodeableConcept),
                    one("subject", Reference),
                    one("encounter", Reference),
                    one("effectiveDateTime", DateTime),
                    one("effectivePeriod", Period),
                    one("issued", Instant),
                    many("performer", Reference),
                    many("resultsInterpreter", Reference),
                    many("specimen", Reference),
                    many("result", Reference),
                    many("imagingStudy", Reference),
                    many("media", Obj),
                    one("conclusion", Str),
                    many("conclusionCode", CodeableConcept),
                    many("presentedForm", Obj),
                ]
            }
        }
        "Condition" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("clinicalStatus", CodeableConcept),
                    one("verificationStatus", CodeableConcept),
                    many("category", CodeableConcept),
                    one("severity", CodeableConcept),
                    one("code", CodeableConcept),
                    many("bodySite", CodeableConcept),
                    one("subject", Reference),
                    one("encounter", Reference),
                    one("onsetDateTime", DateTime),
                    one("onsetPeriod", Period),
                    one("onsetString", Str),
                    one("abatementDateTime", DateTime),
                    one("abatementPeriod", Period),
                    one("recordedDate", DateTime),
                    one("recorder", Reference),
                    one("asserter", Reference),
                    many("stage", Obj),
                    many("evidence", Obj),
                    many("note", Obj),
                    one("abatementAge", Quantity),
                    one("abatementRange", Obj),
                    one("abatementString", Str),
                    one("onsetAge", Quantity),
                    one("onsetRange", Obj),
                ]
            }
        }
        "AllergyIntolerance" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("clinicalStatus", CodeableConcept),
                    one("verificationStatus", CodeableConcept),
                    one("type", Code),
                    many("category", Code),
                    one("criticality", Code),
                    one("code", CodeableConcept),
                    one("patient", Reference),
                    one("encounter", Reference),
                    one("onsetDateTime", DateTime),
                    one("onsetPeriod", Period),
                    one("recordedDate", DateTime),
                    one("recorder", Reference),
                    one("asserter", Reference),
                    one("lastOccurrence", DateTime),
                    many("note", Obj),
                    many("reaction", Obj),
                    one("onsetAge", Quantity),
                    one("onsetRange", Obj),
                    one("onsetString", Str),
                ]
            }
        }
        "Immunization" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("status", Code),
                    one("statusReason", CodeableConcept),
                    one("vaccineCode", CodeableConcept),
                    one("patient", Reference),
                    one("encounter", Reference),
                    one("occurrenceDateTime", DateTime),
                    one("occurrenceString", Str),
                    one("recorded", DateTime),
                    one("primarySource", Bool),
                    one("location", Reference),
                    one("manufacturer", Reference),
                    one("lotNumber", Str),
                    one("expirationDate", Date),
                    one("site", CodeableConcept),
                    one("route", CodeableConcept),
                    one("doseQuantity", Quantity),
                    many("performer", Obj),
                    many("note", Obj),
                    many("reasonCode", CodeableConcept),
                    many("reasonReference", Reference),
                    one("isSubpotent", Bool),
                    many("protocolApplied", Obj),
                    many("education", Obj),
                    one("fundingSource", CodeableConcept),
                    many("programEligibility", CodeableConcept),
                    many("reaction", Obj),
                    one("reportOrigin", CodeableConcept),
                    many("subpotentReason", CodeableConcept),
                ]
            }
        }
        "MedicationStatement" => {
            const {
                &[
                    many("identifier", Identifier),
                    many("basedOn", Reference),
                    many("partOf", Reference),
                    one("status", Code),
                    many("statusReason", CodeableConcept),
                    one("category", CodeableConcept),
                    one("medicationCodeableConcept", CodeableConcept),
                    one("medicationReference", Reference),
                    one("subject", Reference),
                    one("context", Reference),
                    one("effectiveDateTime", DateTime),
                    one("effectivePeriod", Period),
                    one("dateAsserted", DateTime),
                    one("informationSource", Reference),
                    many("derivedFrom", Reference),
                    many("reasonCode", CodeableConcept),
                    many("reasonReference", Reference),
                    many("note", Obj),
                    many("dosage", Obj),
                ]
            }
        }
        "MedicationRequest" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("status", Code),
                    one("statusReason", CodeableConcept),
                    one("intent", Code),
                    many("category", CodeableConcept),
                    one("priority", Code),
                    one("doNotPerform", Bool),
                    one("medicationCodeableConcept", CodeableConcept),
                    one("medicationReference", Reference),
                    one("subject", Reference),
                    one("encounter", Reference),
                    many("supportingInformation", Reference),
                    one("authoredOn", DateTime),
                    one("requester", Reference),
                    one("performer", Reference),
                    one("recorder", Reference),
                    many("reasonCode", CodeableConcept),
                    many("reasonReference", Reference),
                    many("basedOn", Reference),
                    one("groupIdentifier", Identifier),
                    many("note", Obj),
                    many("dosageInstruction", Obj),
                    one("dispenseRequest", Obj),
                    one("substitution", Obj),
                    one("courseOfTherapyType", CodeableConcept),
                    many("detectedIssue", Reference),
                    many("eventHistory", Reference),
                    many("instantiatesCanonical", Uri),
                    many("instantiatesUri", Uri),
                    many("insurance", Reference),
                    one("performerType", CodeableConcept),
                    one("priorPrescription", Reference),
                    one("reportedBoolean", Bool),
                    one("reportedReference", Reference),
                ]
            }
        }
        "Procedure" => {
            const {
                &[
                    many("identifier", Identifier),
                    many("basedOn", Reference),
                    many("partOf", Reference),
                    one("status", Code),
                    one("statusReason", CodeableConcept),
                    one("category", CodeableConcept),
                    one("code", CodeableConcept),
                    one("subject", Reference),
                    one("encounter", Reference),
                    one("performedDateTime", DateTime),
                    one("performedPeriod", Period),
                    one("performedString", Str),
                    one("recorder", Reference),
                    one("asserter", Reference),
                    many("performer", Obj),
                    one("location", Reference),
                    many("reasonCode", CodeableConcept),
                    many("reasonReference", Reference),
                    many("bodySite", CodeableConcept),
                    one("outcome", CodeableConcept),
                    many("report", Reference),
                    many("note", Obj),
                    many("complication", CodeableConcept),
                    many("complicationDetail", Reference),
                    many("focalDevice", Obj),
                    many("followUp", CodeableConcept),
                    many("instantiatesCanonical", Uri),
                    many("instantiatesUri", Uri),
                    one("performedAge", Quantity),
                    one("performedRange", Obj),
                    many("usedCode", CodeableConcept),
                    many("usedReference", Reference),
                ]
            }
        }
        "ServiceRequest" => {
            const {
                &[
                    many("identifier", Identifier),
                    many("basedOn", Reference),
                    many("replaces", Reference),
                    one("requisition", Identifier),
                    one("status", Code),
                    one("intent", Code),
                    many("category", CodeableConcept),
                    one("priority", Code),
                    one("doNotPerform", Bool),
                    one("code", CodeableConcept),
                    one("subject", Reference),
                    one("encounter", Reference),
                    one("occurrenceDateTime", DateTime),
                    one("occurrencePeriod", Period),
                    one("authoredOn", DateTime),
                    one("requester", Reference),
                    many("performer", Reference),
                    many("reasonCode", CodeableConcept),
                    many("reasonReference", Reference),
                    many("specimen", Reference),
                    many("bodySite", CodeableConcept),
                    many("note", Obj),
                    one("asNeededBoolean", Bool),
                    one("asNeededCodeableConcept", CodeableConcept),
                    many("instantiatesCanonical", Uri),
                    many("instantiatesUri", Uri),
                    many("insurance", Reference),
                    many("locationCode", CodeableConcept),
                    many("locationReference", Reference),
                    one("occurrenceTiming", Obj),
                    many("orderDetail", CodeableConcept),
                    one("patientInstruction", Str),
                    one("performerType", CodeableConcept),
                    one("quantityQuantity", Quantity),
                    one("quantityRange", Obj),
                    one("quantityRatio", Obj),
                    many("relevantHistory", Reference),
                    many("supportingInfo", Reference),
                ]
            }
        }
        "Specimen" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("accessionIdentifier", Identifier),
                    one("status", Code),
                    one("type", CodeableConcept),
                    one("subject", Reference),
                    one("receivedTime", DateTime),
                    many("parent", Reference),
                    many("request", Reference),
                    one("collection", Obj),
                    many("processing", Obj),
                    many("container", Obj),
                    many("condition", CodeableConcept),
                    many("note", Obj),
                ]
            }
        }
        "Practitioner" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("active", Bool),
                    many("name", HumanName),
                    many("telecom", ContactPoint),
                    many("address", Address),
                    one("gender", Code),
                    one("birthDate", Date),
                    many("qualification", Obj),
                    many("communication", CodeableConcept),
                    many("photo", Obj),
                ]
            }
        }
        "Organization" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("active", Bool),
                    many("type", CodeableConcept),
                    one("name", Str),
                    many("alias", Str),
                    many("telecom", ContactPoint),
                    many("address", Address),
                    one("partOf", Reference),
                    many("contact", Obj),
                    many("endpoint", Reference),
                ]
            }
        }
        "Location" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("status", Code),
                    one("operationalStatus", Coding),
                    one("name", Str),
                    many("alias", Str),
                    one("description", Str),
                    one("mode", Code),
                    many("type", CodeableConcept),
                    many("telecom", ContactPoint),
                    one("address", Address),
                    one("physicalType", CodeableConcept),
                    one("position", Obj),
                    one("managingOrganization", Reference),
                    one("partOf", Reference),
                    many("endpoint", Reference),
                    one("availabilityExceptions", Str),
                    many("hoursOfOperation", Obj),
                ]
            }
        }
        "RelatedPerson" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("active", Bool),
                    one("patient", Reference),
                    many("relationship", CodeableConcept),
                    many("name", HumanName),
                    many("telecom", ContactPoint),
                    one("gender", Code),
                    one("birthDate", Date),
                    many("address", Address),
                    one("period", Period),
                    many("communication", Obj),
                    many("photo", Obj),
                ]
            }
        }
        "Coverage" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("status", Code),
                    one("type", CodeableConcept),
                    one("policyHolder", Reference),
                    one("subscriber", Reference),
                    one("subscriberId", Str),
                    one("beneficiary", Reference),
                    one("dependent", Str),
                    one("relationship", CodeableConcept),
                    one("period", Period),
                    many("payor", Reference),
                    many("class", Obj),
                    one("order", Int),
                    one("network", Str),
                    many("contract", Reference),
                    many("costToBeneficiary", Obj),
                    one("subrogation", Bool),
                ]
            }
        }
        "Appointment" => {
            const {
                &[
                    many("identifier", Identifier),
                    one("status", Code),
                    many("serviceCategory", CodeableConcept),
                    many("serviceType", CodeableConcept),
                    many("specialty", CodeableConcept),
                    one("appointmentType", CodeableConcept),
                    many("reasonCode", CodeableConcept),
                    many("reasonReference", Reference),
                    one("priority", Int),
                    one("description", Str),
                    one("start", Instant),
                    one("end", Instant),
                    one("minutesDuration", Int),
                    many("slot", Reference),
                    one("created", DateTime),
                    one("comment", Str),
                    many("basedOn", Reference),
                    many("participant", Obj),
                    many("requestedPeriod", Period),
                    one("cancelationReason", CodeableConcept),
                    one("patientInstruction", Str),
                    many("supportingInformation", Reference),
                ]
            }
        }
        "DocumentReference" => {
            const {
                &[
                    one("masterIdentifier", Identifier),
                    many("identifier", Identifier),
                    one("status", Code),
                    one("docStatus", Code),
                    one("type", CodeableConcept),
                    many("category", CodeableConcept),
                    one("subject", Reference),
                    one("date", Instant),
                    many("author", Reference),
                    one("authenticator", Reference),
                    one("custodian", Reference),
                    many("relatesTo", Obj),
                    one("description", Str),
                    many("securityLabel", CodeableConcept),
                    many("content", Obj),
                    one("context", Obj),
                ]
            }
        }
        "Composition" => {
            const {
                &[
                    one("identifier", Identifier),
                    one("status", Code),
                    one("type", CodeableConcept),
                    many("category", CodeableConcept),
                    one("subject", Reference),
                    one("encounter", Reference),
                    one("date", DateTime),
                    many("author", Reference),
                    one("title", Str),
                    one("confidentiality", Code),
                    many("attester", Obj),
                    one("custodian", Reference),
                    many("relatesTo", Obj),
                    many("event", Obj),
                    many("section", Obj),
                ]
            }
        }
        "Provenance" => {
            const {
                &[
                    many("target", Reference),
                    one("occurredPeriod", Period),
                    one("occurredDateTime", DateTime),
                    one("recorded", Instant),
                    many("policy", Uri),
                    one("location", Reference),
                    many("reason", CodeableConcept),
                    one("activity", CodeableConcept),
                    many("agent", Obj),
                    many("entity", Obj),
                    many("signature", Obj),
                ]
            }
        }
        "MessageHeader" => {
            const {
                &[
                    one("eventCoding", Coding),
                    one("eventUri", Uri),
                    many("destination", Obj),
                    one("sender", Reference),
                    one("enterer", Reference),
                    one("author", Reference),
                    one("source", Obj),
                    one("responsible", Reference),
                    one("reason", CodeableConcept),
                    one("response", Obj),
                    many("focus", Reference),
                    one("definition", Uri),
                ]
            }
        }
        "Bundle" => {
            const {
                &[
                    one("identifier", Identifier),
                    one("type", Code),
                    one("timestamp", Instant),
                    one("total", Int),
                    many("link", Obj),
                    many("entry", Obj),
                    one("signature", Obj),
                ]
            }
        }
        _ => &[],
    }
}

/// The choice elements (`x[x]`) of the types [`resource_fields`] lists: at most one of their
/// `xType` names may be present.
pub fn choices(ty: &str) -> &'static [&'static str] {
    match ty {
        "Patient" => &["deceased", "multipleBirth"],
        "Observation" => &["effective", "value"],
        "DiagnosticReport" => &["effective"],
        "Condition" => &["abatement", "onset"],
        "AllergyIntolerance" => &["onset"],
        "Immunization" => &["occurrence"],
        "MedicationStatement" => &["effective", "medication"],
        "MedicationRequest" => &["medication", "reported"],
        "Procedure" => &["performed"],
        "ServiceRequest" => &["asNeeded", "occurrence", "quantity"],
        "Provenance" => &["occurred"],
        "MessageHeader" => &["event"],
        _ => &[],
    }
}

/// Required elements (cardinality 1..) per type; `x[x]` means any choice of `x`.
pub fn required(ty: &str) -> &'static [&'static str] {
    match ty {
        "Observation" => &["status", "code"],
        "Encounter" => &["status", "class"],
        "DiagnosticReport" => &["status", "code"],
        "Condition" => &["subject"],
        "AllergyIntolerance" => &["patient"],
        "Immunization" => &["status", "vaccineCode", "patient", "occurrence[x]"],
        "MedicationStatement" => &["status", "medication[x]", "subject"],
        "MedicationRequest" => &["status", "intent", "medication[x]", "subject"],
        "Procedure" => &["status", "subject"],
        "ServiceRequest" => &["status", "intent", "subject"],
        "RelatedPerson" => &["patient"],
        "Coverage" => &["status", "beneficiary", "payor"],
        "Appointment" => &["status", "participant"],
        "DocumentReference" => &["status", "content"],
        "Composition" => &["status", "type", "date", "author", "title"],
        "Provenance" => &["target", "recorded", "agent"],
        "MessageHeader" => &["event[x]", "source"],
        "Bundle" => &["type"],
        _ => &[],
    }
}

const GENDER: &[&str] = &["male", "female", "other", "unknown"];

/// Codes with a required binding, per type and element.
pub fn binding(ty: &str, element: &str) -> Option<&'static [&'static str]> {
    Some(match (ty, element) {
        ("Patient" | "Practitioner" | "RelatedPerson" | "Person", "gender") => GENDER,
        ("Observation", "status") => &[
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
        ("Encounter", "status") => &[
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
        ("DiagnosticReport", "status") => &[
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
        ("Immunization", "status") => &["completed", "entered-in-error", "not-done"],
        ("MedicationStatement", "status") => &[
            "active",
            "completed",
            "entered-in-error",
            "intended",
            "stopped",
            "on-hold",
            "unknown",
            "not-taken",
        ],
        ("MedicationRequest", "status") => &[
            "active",
            "on-hold",
            "cancelled",
            "completed",
            "entered-in-error",
            "stopped",
            "draft",
            "unknown",
        ],
        ("MedicationRequest", "intent") => &[
            "proposal",
            "plan",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        ],
        ("Procedure", "status") => &[
            "preparation",
            "in-progress",
            "not-done",
            "on-hold",
            "stopped",
            "completed",
            "entered-in-error",
            "unknown",
        ],
        ("ServiceRequest", "status") => &[
            "draft",
            "active",
            "on-hold",
            "revoked",
            "completed",
            "entered-in-error",
            "unknown",
        ],
        ("ServiceRequest", "intent") => &[
            "proposal",
            "plan",
            "directive",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        ],
        ("Specimen", "status") => &[
            "available",
            "unavailable",
            "unsatisfactory",
            "entered-in-error",
        ],
        ("Coverage", "status") => &["active", "cancelled", "draft", "entered-in-error"],
        ("Appointment", "status") => &[
            "proposed",
            "pending",
            "booked",
            "arrived",
            "fulfilled",
            "cancelled",
            "noshow",
            "entered-in-error",
            "checked-in",
            "waitlist",
        ],
        ("DocumentReference", "status") => &["current", "superseded", "entered-in-error"],
        ("Composition", "status") => &["preliminary", "final", "amended", "entered-in-error"],
        ("Location", "status") => &["active", "suspended", "inactive"],
        ("AllergyIntolerance", "type") => &["allergy", "intolerance"],
        ("AllergyIntolerance", "criticality") => &["low", "high", "unable-to-assess"],
        ("AllergyIntolerance", "category") => &["food", "medication", "environment", "biologic"],
        ("Bundle", "type") => &[
            "document",
            "message",
            "transaction",
            "transaction-response",
            "batch",
            "batch-response",
            "history",
            "searchset",
            "collection",
        ],
        _ => return None,
    })
}

/// The type of an element that is not in a table, guessed from its name: the date-like
/// element names of R4 (every `...DateTime` and `...Instant` choice, `date`, `issued`...).
pub fn type_by_name(key: &str) -> Option<Ty> {
    match key {
        "birthDate" => Some(Date),
        "issued" | "lastUpdated" | "timestamp" => Some(Instant),
        "date" | "recorded" | "recordedDate" | "authoredOn" | "created" | "sent" | "received"
        | "start" | "end" => Some(DateTime),
        k if k.ends_with("DateTime") => Some(DateTime),
        k if k.ends_with("Instant") => Some(Instant),
        k if k == "period" || k.ends_with("Period") => Some(Period),
        _ => None,
    }
}
