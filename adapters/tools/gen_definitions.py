#!/usr/bin/env python3
"""Regenerates adapters/src/data/*.txt from the HL7 example packages.

Inputs: the npm packages hl7.fhir.r3.examples@3.0.2, hl7.fhir.r4.examples@4.0.1,
hl7.fhir.r4b.core@4.3.0 and hl7.fhir.r5.core@5.0.0 (the npm registry), each unpacked into
PKG_DIR/{r3,r4,r4b,r5} (the `package` folder). They carry the core StructureDefinitions and
SearchParameters.

Outputs (facts from the specification, CC0):
  elements_<v>.txt  one line per element of every resource type of the version (the
                    StructureDefinitions of kind `resource` that are not abstract and are not
                    profiles):
                    path <TAB> types (comma-separated, `@Path` for a content reference) <TAB> max
                    <TAB> min [<TAB> M when the element is a modifier]
  search_<v>.txt    one line per search parameter: resource type <TAB> code

Usage: python3 adapters/tools/gen_definitions.py PKG_DIR
"""
import json
import os
import sys

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
        line = "%s\t%s\t%s\t%s" % (path, types, e.get("max", "*"), e.get("min", 0))
        if e.get("isModifier"):
            line += "\tM"
        out.append(line)
    return out


def resource_types(pkg):
    """Every concrete resource type the package defines, sorted."""
    types = set()
    for f in os.listdir(pkg):
        if not (f.startswith("StructureDefinition-") and f.endswith(".json")):
            continue
        sd = json.load(open(os.path.join(pkg, f), encoding="utf-8"))
        if (sd.get("resourceType") == "StructureDefinition" and sd.get("kind") == "resource"
                and not sd.get("abstract") and sd.get("derivation") == "specialization"):
            types.add(sd["type"])
    return sorted(types)


def search_params(pkg, types):
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
            if b in types or b in ("Resource", "DomainResource"):
                rows.add("%s\t%s" % (b, r["code"]))
    return sorted(rows)


def main():
    pkg_dir = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    data = os.path.join(here, "..", "src", "data")
    for v, folder in VERSIONS.items():
        pkg = os.path.join(pkg_dir, folder)
        types = resource_types(pkg)
        lines = []
        for t in types:
            lines.extend(elements(pkg, t))
        with open(os.path.join(data, "elements_%s.txt" % v), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(data, "search_%s.txt" % v), "w", encoding="utf-8") as f:
            f.write("\n".join(search_params(pkg, types)) + "\n")


if __name__ == "__main__":
    main()
