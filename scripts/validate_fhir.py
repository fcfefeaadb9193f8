#!/usr/bin/env python3
"""Validates the translation corpus's outputs with an independent validator, fhir.resources
(pydantic models generated from the HL7 StructureDefinitions: R5 by default, R4B and STU3 as
subpackages; R4 output goes through the R4B model, as with fhir-sdk).

Input: the directory the corpus test writes with ASSENT_CORPUS_OUT (manifest.tsv: from, to,
source file, output file, explained). An output counts only when its source example passes
the model of its own version (the official examples are not all valid for the models). A
rejected output fails the run unless the translation reported why (a nested resource left in
its own version, a required element the source cannot fill, a code outside the target's
required value set: the manifest's `explained`) or a row of the exceptions file
(scripts/validate_fhir_exceptions.tsv: direction, file pattern, message fragment, reason)
covers it. Prints the table; exit 1 on an unexplained rejection or a missing corpus.

Usage: validate_fhir.py CORPUS_OUT_DIR [EXCEPTIONS_FILE]
       validate_fhir.py --plain DIR
         (every DIR/{STU3,R4,R4B,R5}/*.json must be valid for its version's model, with no
         exceptions: the AuditEvents the audit API serves, written by the e2e test with
         ASSENT_AUDIT_OUT)
"""

import csv
import fnmatch
import json
import os
import sys
from collections import OrderedDict

import fhir.resources
import fhir.resources.R4B
import fhir.resources.STU3

MODELS = {
    "STU3": fhir.resources.STU3.get_fhir_model_class,
    "R4": fhir.resources.R4B.get_fhir_model_class,
    "R4B": fhir.resources.R4B.get_fhir_model_class,
    "R5": fhir.resources.get_fhir_model_class,
}


def validate(version, resource):
    """None when the model of `version` accepts `resource`, else the first lines of why."""
    try:
        model = MODELS[version](resource.get("resourceType", ""))
    except Exception as e:  # an unknown resource type
        return "no model: %s" % e
    try:
        model.model_validate(resource)
        return None
    except Exception as e:
        lines = [l for l in str(e).splitlines() if l.strip()]
        return " | ".join(lines[:5])


def load_exceptions(path):
    rows = []
    if not path or not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4 or not parts[3].strip():
                sys.exit("%s: each row is direction, file pattern, message, reason: %r" % (path, line))
            rows.append({"direction": parts[0], "file": parts[1], "message": parts[2],
                         "reason": parts[3], "used": 0})
    return rows


def excepted(exceptions, direction, name, message):
    for row in exceptions:
        if row["direction"] not in ("*", direction):
            continue
        if not fnmatch.fnmatch(name, row["file"]):
            continue
        if row["message"] and row["message"] not in message:
            continue
        row["used"] += 1
        return row
    return None


def plain(root):
    """Validates DIR/{version}/*.json, each with its version's model; exit 1 on any rejection."""
    counts = OrderedDict()
    problems = []
    for version in MODELS:
        folder = os.path.join(root, version)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                resource = json.load(f)
            c = counts.setdefault(version, [0, 0])
            c[0] += 1
            why = validate(version, resource)
            if why is None:
                c[1] += 1
            else:
                problems.append("%s %s (%s): %s" % (version, name, resource.get("resourceType"), why))
    if not counts:
        sys.exit("validate_fhir: no resources under %s" % root)
    print("\nfhir.resources %s validation of %s" % (fhir.resources.__version__, root))
    for version, (n, valid) in counts.items():
        print("%-5s %4d resources, %4d valid" % (version, n, valid))
    if problems:
        print("\n%d resources rejected:" % len(problems))
        for p in problems:
            print("  " + p)
        sys.exit(1)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--plain":
        if len(sys.argv) != 3:
            sys.exit(__doc__)
        plain(sys.argv[2])
        return
    out_dir = sys.argv[1]
    exceptions = load_exceptions(sys.argv[2] if len(sys.argv) > 2 else None)
    manifest = os.path.join(out_dir, "manifest.tsv")
    if not os.path.exists(manifest):
        sys.exit("validate_fhir: %s is missing (did the corpus test run with ASSENT_CORPUS_OUT?)" % manifest)
    with open(manifest, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        sys.exit("validate_fhir: the manifest lists no outputs")

    source_ok = {}
    table = OrderedDict()
    problems = []
    for row in rows:
        direction = "%s->%s" % (row["from"], row["to"])
        r = table.setdefault(direction, dict(outputs=0, checked=0, valid=0, explained=0,
                                             excepted=0, unexplained=0))
        r["outputs"] += 1
        source = row["source"]
        if source not in source_ok:
            with open(source, encoding="utf-8") as f:
                source_ok[source] = validate(row["from"], json.load(f)) is None
        if not source_ok[source]:
            continue
        r["checked"] += 1
        with open(os.path.join(out_dir, row["output"]), encoding="utf-8") as f:
            output = json.load(f)
        why = validate(row["to"], output)
        if why is None:
            r["valid"] += 1
        elif row["explained"] == "true":
            r["explained"] += 1
        elif excepted(exceptions, direction, os.path.basename(source), why):
            r["excepted"] += 1
        else:
            r["unexplained"] += 1
            problems.append("%s %s: %s" % (direction, os.path.basename(source), why))

    header = ("direction", "outputs", "checked", "valid", "reported", "excepted", "unexplained")
    print("\nfhir.resources %s validation of the corpus outputs "
          "(checked: the source example is valid for its own version's model)" % fhir.resources.__version__)
    print("%-12s %8s %8s %8s %9s %9s %12s" % header)
    for direction, r in table.items():
        print("%-12s %8d %8d %8d %9d %9d %12d" % (direction, r["outputs"], r["checked"], r["valid"],
                                                   r["explained"], r["excepted"], r["unexplained"]))
    for row in exceptions:
        print("exception used %d times: %s %s %r (%s)" % (row["used"], row["direction"], row["file"],
                                                        row["message"], row["reason"]))
    if problems:
        print("\n%d outputs rejected without an explanation:" % len(problems))
        for p in problems:
            print("  " + p)
        sys.exit(1)


if __name__ == "__main__":
    main()
