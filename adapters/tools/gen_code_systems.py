#!/usr/bin/env python3
"""Regenerates adapters/src/data/code_systems_moved.txt from the HL7 example packages.

Inputs: hl7.fhir.r3.examples@3.0.2 and hl7.fhir.r4.examples@4.0.1 (npm registry), unpacked
into PKG_DIR/{r3,r4} (the `package` folder), as for gen_definitions.py. Each carries the
CodeSystem resources of its version.

R4 moved the code systems that HL7 maintains outside the core specification to HL7
Terminology (THO): `http://hl7.org/fhir/{name}` became
`http://terminology.hl7.org/CodeSystem/{name}`, and every v2 table and v3 code system moved
(`http://hl7.org/fhir/v2/NNNN` -> `.../CodeSystem/v2-NNNN`, `http://hl7.org/fhir/v3/{Name}`
-> `.../CodeSystem/v3-{Name}`; the adapters apply those two by rule). Code systems the core
binds as required stayed `http://hl7.org/fhir/{name}`.

Output (facts from the specification, CC0):
  code_systems_moved.txt  one line per FHIR-named code system of STU3 whose R4 URL is the
                          THO one under the same name (the STU3 URL is not an R4 code
                          system, and `.../CodeSystem/{name}` is): name

The script also checks the rule for v2 and v3 (every STU3 v2/v3 code system has its R4
counterpart by the rule, none kept its STU3 URL) and prints the FHIR-named STU3 code systems
with neither an R4 URL of their own nor a THO one of the same name (renamed or retired in
R4: not mapped, they pass unchanged).

Usage: python3 adapters/tools/gen_code_systems.py PKG_DIR
"""
import glob
import json
import os
import sys

FHIR = "http://hl7.org/fhir/"
THO = "http://terminology.hl7.org/CodeSystem/"


def urls(pkg):
    out = set()
    for path in glob.glob(os.path.join(pkg, "CodeSystem-*.json")):
        with open(path, encoding="utf-8") as f:
            try:
                resource = json.load(f)
            except ValueError:
                continue
        if resource.get("resourceType") == "CodeSystem" and resource.get("url"):
            out.add(resource["url"])
    return out


def main(pkg_dir):
    stu3 = urls(os.path.join(pkg_dir, "r3", "package"))
    r4 = urls(os.path.join(pkg_dir, "r4", "package"))
    moved, unmatched, rule_misses = [], [], []
    for url in sorted(stu3):
        if not url.startswith(FHIR):
            continue
        rest = url[len(FHIR):]
        for old, new in (("v2/", "v2-"), ("v3/", "v3-")):
            if rest.startswith(old):
                # Versioned v2 tables (`v2/0360/2.7`) keep their suffix, as R4's examples
                # write them (`v2-0360/2.7`); the R4 package names them `v2-0360|2.7`.
                base = THO + new + rest[len(old):]
                if url in r4 or not (base in r4 or "|".join(base.rsplit("/", 1)) in r4):
                    rule_misses.append(url)
                break
        else:
            if url in r4:
                continue
            if THO + rest in r4:
                moved.append(rest)
            else:
                unmatched.append(url)
    out = os.path.join(os.path.dirname(__file__), "..", "src", "data", "code_systems_moved.txt")
    with open(out, "w", encoding="utf-8") as f:
        for name in moved:
            f.write(name + "\n")
    print("moved by name: %d" % len(moved))
    print("v2/v3 not following the rule: %s" % rule_misses)
    print("renamed or retired (not mapped): %d" % len(unmatched))
    for url in unmatched:
        print("  " + url)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
