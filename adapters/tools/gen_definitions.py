#!/usr/bin/env python3
"""Regenerates adapters/src/data/*.txt from the HL7 example packages.

Inputs: the npm packages hl7.fhir.r3.examples@3.0.2, hl7.fhir.r4.examples@4.0.1,
hl7.fhir.r4b.examples@4.3.0 and hl7.fhir.r5.examples@5.0.0 (registry.npmjs.org), unpacked
into PKG_DIR/{r3,r4,r4b,r5}. They carry the core StructureDefinitions and SearchParameters.

Outputs (facts from the specification, CC0):
  elements_<v>.txt  one line per element of each supported resource type:
                    path <TAB> types (comma-separated, `@Path` for a content reference) <TAB> max
                    <TAB> min
  search_<v>.txt    one line per search parameter: resource type <TAB> code

Usage: python3 adapters/tools/gen_definitions.py PKG_DIR
"""
import json
import os
import sys

TYPES = """Patient Practitioner PractitionerRole Organization Location Encounter Observation Condition
Procedure MedicationRequest MedicationStatement Medication AllergyIntolerance Immunization
DiagnosticReport DocumentReference CarePlan CareTeam Goal ServiceRequest ProcedureRequest Consent
AuditEvent Provenance Bundle OperationOutcome CapabilityStatement""".split()

VERSIONS = {"stu3": "r3", "r4": "r4", "r4b": "r4b", "r5": "r5"}


def elements(pkg, t):
    p = os.path.join(pkg, "StructureDefinition-%s.json" % t)
    if not os.path.exists(p):
        return []
    sd = json.load(open(p, encoding="utf-8"))
    out = []
    for e in sd["snapshot"]["element"]:
        path = e["path"]
        if "." not in path:
            continue
        if e.get("contentReference"):
            types = "@" + e["contentReference"].split("#", 1)[1]
        else:
            codes = []
            for ty in e.get("type", []):
                c = ty.get("code", "")
                if c.startswith("http://hl7.org/fhirpath/System."):
                    c = "string"
                # STU3 writes the primitive type of `id` as an extension-only type.
                if not c:
                    c = "string"
                codes.append(c)
            types = ",".join(codes)
        out.append("%s\t%s\t%s\t%s" % (path, types, e.get("max", "*"), e.get("min", 0)))
    return out


def search_params(pkg):
    rows = set()
    bundle = os.path.join(pkg, "Bundle-searchParams.json")
    resources = []
    if os.path.exists(bundle):
        resources = [e["resource"] for e in json.load(open(bundle, encoding="utf-8"))["entry"]]
    else:
        for f in os.listdir(pkg):
            if f.startswith("SearchParameter-"):
                resources.append(json.load(open(os.path.join(pkg, f), encoding="utf-8")))
    for r in resources:
        if r.get("resourceType") != "SearchParameter":
            continue
        for b in r.get("base", []):
            if b in TYPES or b in ("Resource", "DomainResource"):
                rows.add("%s\t%s" % (b, r["code"]))
    return sorted(rows)


def main():
    pkg_dir = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    data = os.path.join(here, "..", "src", "data")
    for v, folder in VERSIONS.items():
        pkg = os.path.join(pkg_dir, folder)
        lines = []
        for t in TYPES:
            lines.extend(elements(pkg, t))
        with open(os.path.join(data, "elements_%s.txt" % v), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(data, "search_%s.txt" % v), "w", encoding="utf-8") as f:
            f.write("\n".join(search_params(pkg)) + "\n")


if __name__ == "__main__":
    main()
