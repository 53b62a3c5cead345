#!/usr/bin/env python3
"""Validates every resource of a FHIR R4 Bundle (JSON file) with fhir.resources' R4 models.

Used by the engine's format tests (engine/src/format/tests.rs) as a validator independent of
the engine's own checks. Needs `pip install 'fhir.resources==6.1.0' 'pydantic<2'` (R4 models).
Exits 1 and prints each refused resource with pydantic's reasons.
"""
import json
import sys

from fhir.resources import construct_fhir_element


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        bundle = json.load(f)
    failures = 0
    resources = [bundle]
    resources += [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
    for i, resource in enumerate(resources):
        try:
            construct_fhir_element(resource["resourceType"], resource)
        except Exception as e:  # pydantic.ValidationError and friends
            failures += 1
            print(f"resource {i} ({resource.get('resourceType')}): {e}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
