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
  codes_<v>.txt     one line per element of type `code` with a required binding whose value
                    set the package defines in full (every code listed or every code of a
                    code system of the package): path <TAB> codes (space-separated, sorted)

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


def load_terminology(pkg):
    """ValueSets and CodeSystems of the package by canonical URL."""
    value_sets, code_systems = {}, {}
    for f in os.listdir(pkg):
        if not f.endswith(".json") or not (f.startswith("ValueSet-") or f.startswith("CodeSystem-")):
            continue
        r = json.load(open(os.path.join(pkg, f), encoding="utf-8"))
        if r.get("resourceType") == "ValueSet":
            value_sets[r.get("url")] = r
        elif r.get("resourceType") == "CodeSystem":
            code_systems[r.get("url")] = r
    return value_sets, code_systems


def system_codes(cs):
    out = set()
    def walk(concepts):
        for c in concepts or []:
            out.add(c["code"])
            walk(c.get("concept"))
    walk(cs.get("concept"))
    return out


def value_set_codes(url, value_sets, code_systems, depth=0):
    """Every code of the value set, or None when it cannot be listed from the package."""
    vs = value_sets.get(url)
    if vs is None or depth > 8:
        return None
    compose = vs.get("compose")
    if not compose:
        return None
    codes = set()
    for inc in compose.get("include", []):
        if inc.get("filter"):
            return None
        if inc.get("concept"):
            codes.update(c["code"] for c in inc["concept"])
        elif inc.get("system"):
            cs = code_systems.get(inc["system"])
            if cs is None or cs.get("content") not in (None, "complete"):
                return None
            codes.update(system_codes(cs))
        for ref in inc.get("valueSet", []):
            inner = value_set_codes(ref.split("|")[0], value_sets, code_systems, depth + 1)
            if inner is None:
                return None
            codes.update(inner)
    return codes


def required_codes(pkg, t, terminology):
    p = os.path.join(pkg, "StructureDefinition-%s.json" % t)
    if not os.path.exists(p):
        return []
    sd = json.load(open(p, encoding="utf-8"))
    out = []
    for e in sd["snapshot"]["element"]:
        b = e.get("binding") or {}
        types = [ty.get("code") for ty in e.get("type", [])]
        if b.get("strength") != "required" or types != ["code"]:
            continue
        url = b.get("valueSet") or b.get("valueSetUri") or (b.get("valueSetReference") or {}).get("reference")
        if not url:
            continue
        codes = value_set_codes(url.split("|")[0], *terminology)
        if codes:
            out.append("%s\t%s" % (e["path"], " ".join(sorted(codes))))
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
        terminology = load_terminology(pkg)
        lines, code_lines = [], []
        for t in types:
            lines.extend(elements(pkg, t))
            code_lines.extend(required_codes(pkg, t, terminology))
        with open(os.path.join(data, "codes_%s.txt" % v), "w", encoding="utf-8") as f:
            f.write("\n".join(code_lines) + "\n")
        with open(os.path.join(data, "elements_%s.txt" % v), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(data, "search_%s.txt" % v), "w", encoding="utf-8") as f:
            f.write("\n".join(search_params(pkg, types)) + "\n")


if __name__ == "__main__":
    main()
