#!/usr/bin/env python3
"""Validates FHIR R4 JSON with an independent implementation: the fhir.resources 6.1.0 models.

Usage: fhir_validate.py [FILE...]   (no file: one JSON document on stdin)

A document may be a resource, a Bundle (the Bundle and each entry's resource are validated), or
an array of them. fhir.resources rejects unknown elements, wrong cardinalities and malformed
primitives (dates, ids, uris...). It does not check code bindings, so the required bindings the
mappings produce are checked here (gender, Encounter.status/class, Observation.status, ...), as
are transaction references: every urn:uuid reference must name an entry's fullUrl.

Prints one line per error ("<where>: <message>") and exits 1 if there was any; 2 when the
validator itself cannot run (fhir.resources missing or the wrong version).
"""

import json
import sys

try:
    import fhir.resources
    from fhir.resources import construct_fhir_element
except ImportError as e:  # pragma: no cover
    print(f"fhir_validate: cannot import fhir.resources ({e}); "
          "pip install -r tests/requirements.txt", file=sys.stderr)
    sys.exit(2)

if not fhir.resources.__version__.startswith("6."):
    print(f"fhir_validate: fhir.resources {fhir.resources.__version__} is not the R4 (6.x) release; "
          "pip install -r tests/requirements.txt", file=sys.stderr)
    sys.exit(2)

V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"

# Required bindings: resource type -> element -> allowed codes.
CODES = {
    "Patient": {"gender": {"male", "female", "other", "unknown"}},
    "RelatedPerson": {"gender": {"male", "female", "other", "unknown"}},
    "Encounter": {"status": {"planned", "arrived", "triaged", "in-progress", "onleave",
                             "finished", "cancelled", "entered-in-error", "unknown"}},
    "Observation": {"status": {"registered", "preliminary", "final", "amended", "corrected",
                               "cancelled", "entered-in-error", "unknown"}},
    "DiagnosticReport": {"status": {"registered", "partial", "preliminary", "final", "amended",
                                    "corrected", "appended", "cancelled", "entered-in-error",
                                    "unknown"}},
    "ServiceRequest": {"status": {"draft", "active", "on-hold", "revoked", "completed",
                                  "entered-in-error", "unknown"},
                       "intent": {"proposal", "plan", "directive", "order", "original-order",
                                  "reflex-order", "filler-order", "instance-order", "option"},
                       "priority": {"routine", "urgent", "asap", "stat"}},
    "AllergyIntolerance": {"type": {"allergy", "intolerance"},
                           "criticality": {"low", "high", "unable-to-assess"}},
    "Immunization": {"status": {"completed", "entered-in-error", "not-done"}},
    "Coverage": {"status": {"active", "cancelled", "draft", "entered-in-error"}},
    "Appointment": {"status": {"proposed", "pending", "booked", "arrived", "fulfilled",
                               "cancelled", "noshow", "entered-in-error", "checked-in",
                               "waitlist"}},
    "DocumentReference": {"status": {"current", "superseded", "entered-in-error"},
                          "docStatus": {"preliminary", "final", "amended", "entered-in-error"}},
    "Specimen": {"status": {"available", "unavailable", "unsatisfactory", "entered-in-error"}},
}

# Required bindings of data types and backbone elements, wherever they appear.
ELEMENT_CODES = {
    ("telecom", "system"): {"phone", "fax", "email", "pager", "url", "sms", "other"},
    ("telecom", "use"): {"home", "work", "temp", "old", "mobile"},
    ("address", "use"): {"home", "work", "temp", "old", "billing"},
    ("address", "type"): {"postal", "physical", "both"},
    ("name", "use"): {"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"},
    ("identifier", "use"): {"usual", "official", "temp", "secondary", "old"},
    ("link", "type"): {"replaced-by", "replaces", "refer", "seealso"},
    ("reaction", "severity"): {"mild", "moderate", "severe"},
    ("participant", "status"): {"accepted", "declined", "tentative", "needs-action"},
    ("participant", "required"): {"required", "optional", "information-only"},
    ("location", "status"): {"planned", "active", "reserved", "completed"},
    ("entity", "role"): {"derivation", "revision", "quotation", "source", "removal"},
    ("valueQuantity", "comparator"): {"<", "<=", ">=", ">"},
}
ALLERGY_CATEGORY = {"food", "medication", "environment", "biologic"}


class Errors:
    def __init__(self):
        self.lines = []

    def add(self, where, message):
        self.lines.append(f"{where}: {message}")


def walk(node, path, parent_key, errors, where):
    """Checks the data type bindings in ELEMENT_CODES at every depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            allowed = ELEMENT_CODES.get((parent_key, key))
            if allowed and isinstance(value, str) and value not in allowed:
                errors.add(where, f"{path}.{key} = {value!r} is not one of {sorted(allowed)}")
            walk(value, f"{path}.{key}", key, errors, where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            walk(item, f"{path}[{i}]", parent_key, errors, where)


def check_bindings(resource, errors, where):
    rtype = resource.get("resourceType")
    for element, allowed in CODES.get(rtype, {}).items():
        value = resource.get(element)
        if value is not None and value not in allowed:
            errors.add(where, f"{rtype}.{element} = {value!r} is not one of {sorted(allowed)}")
    if rtype == "Encounter":
        cls = resource.get("class") or {}
        if cls.get("system") not in (V3_ACT, NULL_FLAVOR) or not cls.get("code"):
            errors.add(where, f"Encounter.class {cls!r} is not a v3 ActCode (or NullFlavor) coding")
    if rtype == "AllergyIntolerance":
        for c in resource.get("category", []):
            if c not in ALLERGY_CATEGORY:
                errors.add(where, f"AllergyIntolerance.category {c!r} is not one of {sorted(ALLERGY_CATEGORY)}")
    walk(resource, rtype, None, errors, where)


def references(node):
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def validate_resource(resource, errors, where):
    if not isinstance(resource, dict) or "resourceType" not in resource:
        errors.add(where, "not a FHIR resource (no resourceType)")
        return
    rtype = resource["resourceType"]
    try:
        construct_fhir_element(rtype, json.loads(json.dumps(resource)))
    except Exception as e:  # pydantic.ValidationError, KeyError for unknown types, ...
        for line in str(e).splitlines():
            errors.add(f"{where} {rtype}", line)
    check_bindings(resource, errors, f"{where} {rtype}")


def validate_document(doc, errors, where):
    if isinstance(doc, list):
        for i, item in enumerate(doc):
            validate_document(item, errors, f"{where}[{i}]")
        return
    validate_resource(doc, errors, where)
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        entries = doc.get("entry", [])
        full_urls = {e.get("fullUrl") for e in entries}
        for i, entry in enumerate(entries):
            resource = entry.get("resource")
            if resource is None:
                continue
            at = f"{where} entry[{i}]"
            validate_resource(resource, errors, at)
            for ref in references(resource):
                if ref.startswith("urn:uuid:") and ref not in full_urls:
                    errors.add(at, f"reference {ref} names no entry of the Bundle")


def main(argv):
    errors = Errors()
    sources = argv[1:] or ["-"]
    for source in sources:
        try:
            text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
            doc = json.loads(text)
        except (OSError, ValueError) as e:
            errors.add(source, f"cannot read JSON: {e}")
            continue
        validate_document(doc, errors, "stdin" if source == "-" else source)
    for line in errors.lines:
        print(line)
    return 1 if errors.lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
