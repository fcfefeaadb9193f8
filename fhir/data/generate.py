#!/usr/bin/env python3
"""Writes the facts assent-fhir needs about one FHIR version, from that version's official
definitions: the Patient CompartmentDefinition, the SearchParameter resources and the
StructureDefinitions of resources and data types.

    generate.py --version r4 --source hl7.fhir.r4.examples@4.0.1 DEFINITIONS_DIR OUT.tsv

DEFINITIONS_DIR holds the definitions as JSON: one resource per file (an npm FHIR package's
`package/` folder) or Bundles of them (`search-parameters.json`, `profiles-resources.json`, ...).
Only facts are written (type and element names, reference targets reduced to "may be a
Patient or not", summary and cardinality flags, search parameter codes); see README.md for the
format. The output is deterministic: the same definitions give the same bytes.
"""

import argparse
import glob
import json
import os
import re
import sys

PATIENT = "http://hl7.org/fhir/StructureDefinition/Patient"
ANY = {
    "http://hl7.org/fhir/StructureDefinition/Resource",
    "http://hl7.org/fhir/StructureDefinition/DomainResource",
}
# Element keys every structure has, handled by the walker without a table entry.
UNIVERSAL = {"extension", "modifierExtension", "id"}
# Strings that locate a resource of the server (`Patient/1/_history/2`): a Bundle entry's
# request and response, and an R5 Subscription filter's value (`patient` = `Patient/123`).
LOCATIONS = {
    ("Bundle.entry.request", "url"),
    ("Bundle.entry.response", "location"),
    ("Subscription.filterBy", "value"),
}


def warn(message):
    print("warning: " + message, file=sys.stderr)


def load(directory):
    """Every resource in the directory's JSON files (Bundles opened), by resourceType."""
    found = {}

    def add(resource):
        if not isinstance(resource, dict):
            return
        kind = resource.get("resourceType")
        if kind == "Bundle":
            for entry in resource.get("entry", []):
                add(entry.get("resource"))
            return
        if kind in ("CompartmentDefinition", "SearchParameter", "StructureDefinition"):
            found.setdefault(kind, []).append(resource)

    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        name = os.path.basename(path)
        if not (
            name.startswith(("CompartmentDefinition", "SearchParameter", "StructureDefinition"))
            or name.startswith(("compartmentdefinition", "search-parameters", "profiles-"))
        ):
            continue
        with open(path, encoding="utf-8") as f:
            try:
                add(json.load(f))
            except json.JSONDecodeError as e:
                warn(f"{name}: {e}")
    return found


def target_profiles(type_entry):
    """targetProfile as a list (STU3 has one string per type entry, R4+ a list)."""
    t = type_entry.get("targetProfile")
    if t is None:
        return []
    return [t] if isinstance(t, str) else list(t)


def capitalized(code):
    return code[:1].upper() + code[1:]


def is_primitive(code):
    return code[:1].islower() or "/" in code or "." in code


class Definitions:
    def __init__(self, found):
        self.by_type = {}
        self.constraints = {}
        for sd in found.get("StructureDefinition", []):
            url = sd.get("url", "")
            if not url.startswith("http://hl7.org/fhir/StructureDefinition/"):
                continue
            if sd.get("kind") not in ("resource", "complex-type"):
                continue
            if sd.get("derivation") == "constraint":
                self.constraints[sd["id"]] = sd["type"]
                continue
            if "snapshot" not in sd:
                warn(f"{sd['id']} has no snapshot")
                continue
            self.by_type[sd["type"]] = sd
        self.resources = sorted(
            t
            for t, sd in self.by_type.items()
            if sd["kind"] == "resource" and not sd.get("abstract")
        )
        # structure name -> {json field name: kind}
        self.structs = {}
        # structure name -> {base element name: [(json name, kinds...)]} for search expressions
        self.elements = {}
        # resource type -> [(json name, base name, summary, mandatory)]
        self.top = {}
        # "Struct.jsonName" of a Reference or CodeableReference -> its target type names
        # (None: any resource)
        self.ref_targets = {}
        for t, sd in sorted(self.by_type.items()):
            self.read_structure(t, sd)

    def base_type(self, code):
        """The specialization a type code names (SimpleQuantity -> Quantity)."""
        seen = set()
        while code not in self.by_type and code in self.constraints and code not in seen:
            seen.add(code)
            code = self.constraints[code]
        return code if code in self.by_type else None

    def read_structure(self, type_name, sd):
        elements = sd["snapshot"]["element"]
        paths = {e["path"] for e in elements}
        has_children = {p.rsplit(".", 1)[0] for p in paths if "." in p}
        is_resource = sd["kind"] == "resource"
        for e in elements:
            path = e["path"]
            if "." not in path:
                self.structs.setdefault(path, {})
                self.elements.setdefault(path, {})
                continue
            parent, name = path.rsplit(".", 1)
            if parent != type_name and parent not in has_children:
                warn(f"{path}: parent {parent} not found")
            fields = self.structs.setdefault(parent, {})
            by_base = self.elements.setdefault(parent, {})
            base = name[:-3] if name.endswith("[x]") else name
            json_kinds = []
            if "contentReference" in e:
                target = e["contentReference"].split("#", 1)[1]
                json_kinds.append((base, "s:" + target))
            elif path in has_children:
                json_kinds.append((base, "s:" + path))
            else:
                for entry in self.type_entries(e):
                    code = entry["code"]
                    json_name = base + capitalized(code) if name.endswith("[x]") else base
                    json_kinds.append((json_name, self.kind_of(code, entry, path)))
            # One JSON name per type; Reference entries (STU3 lists one per target) merge.
            for entry in self.type_entries(e):
                code = self.base_type(entry["code"]) or entry["code"]
                if code not in ("Reference", "CodeableReference"):
                    continue
                json_name = base + capitalized(entry["code"]) if name.endswith("[x]") else base
                key = parent + "." + json_name
                names = [t.rsplit("/", 1)[1] for t in target_profiles(entry)]
                if not names or any(t in ANY for t in target_profiles(entry)):
                    self.ref_targets[key] = None
                elif key not in self.ref_targets:
                    self.ref_targets[key] = sorted(names)
                elif self.ref_targets[key] is not None:
                    self.ref_targets[key] = sorted(set(self.ref_targets[key]) | set(names))
            merged = {}
            for json_name, kind in json_kinds:
                old = merged.get(json_name)
                if old in ("r-", "c-") and kind in ("r+", "c+"):
                    merged[json_name] = kind
                elif old is None:
                    merged[json_name] = kind
            by_base[base] = sorted(merged.items())
            for json_name, kind in merged.items():
                if (parent, base) in LOCATIONS:
                    kind = "L"
                if base == "resourceType" and parent != type_name:
                    kind = "P"  # an element named so (ExampleScenario.instance): not a resource
                if kind is not None and base not in UNIVERSAL:
                    fields[json_name] = kind
            if is_resource and parent == type_name:
                summary = bool(e.get("isSummary"))
                mandatory = int(e.get("min", 0)) >= 1
                # every JSON spelling of the element, primitive ones included
                spellings = sorted(merged) if merged else [base]
                for json_name in spellings:
                    self.top.setdefault(type_name, []).append(
                        (json_name, base, summary, mandatory)
                    )

    def type_entries(self, e):
        """The element's type entries; STU3 repeats Reference once per target profile."""
        return e.get("type", [])

    def kind_of(self, code, entry, path):
        """What the walker does with a value of this type: None (a primitive: nothing to
        walk), r+/r- (a Reference that may / may not be a Patient), c+/c- (a
        CodeableReference), R (a resource), s:Name (a structure)."""
        if code in ("Reference", "CodeableReference"):
            targets = target_profiles(entry)
            may = not targets or PATIENT in targets or any(t in ANY for t in targets)
            prefix = "r" if code == "Reference" else "c"
            return prefix + ("+" if may else "-")
        if code in ("Resource", "DomainResource"):
            return "R"
        if is_primitive(code):
            return None
        if code in ("Element", "BackboneElement"):
            warn(f"{path}: {code} without children")
            return None
        base = self.base_type(code)
        if base is None:
            warn(f"{path}: unknown type {code}")
            return None
        if base in ("Reference", "CodeableReference"):
            return self.kind_of(base, entry, path)
        return "s:" + base


def split_top(expression, separator):
    """Splits at `separator` outside parentheses and quotes."""
    parts, depth, quote, current = [], 0, False, ""
    i = 0
    while i < len(expression):
        c = expression[i]
        if c == "'" and (i == 0 or expression[i - 1] != "\\"):
            quote = not quote
        elif not quote and c == "(":
            depth += 1
        elif not quote and c == ")":
            depth -= 1
        if not quote and depth == 0 and expression.startswith(separator, i):
            parts.append(current)
            current = ""
            i += len(separator)
            continue
        current += c
        i += 1
    parts.append(current)
    return [p.strip() for p in parts]


def strip_parens(text):
    """`((a.b))` -> `a.b`: removes parentheses that enclose the whole text."""
    text = text.strip()
    while text.startswith("("):
        depth = 0
        for i, c in enumerate(text):
            depth += c == "("
            depth -= c == ")"
            if depth == 0:
                break
        if i != len(text) - 1:
            break
        text = text[1:-1].strip()
    return text


def parse_path(expression):
    """A FHIRPath search expression part -> (steps, cast, resolves_to): steps are element
    names, cast a type chosen by `as X` / `.as(X)` / `.ofType(X)` at the end, resolves_to
    the type of `.where(resolve() is X)`. None when the form is not a path."""
    text = strip_parens(expression)
    cast = None
    m = re.fullmatch(r"(.*\S)\s+as\s+([A-Za-z]+)", text, re.S)
    if m and split_top(m.group(1), " as ") == [m.group(1).strip()]:
        text, cast = strip_parens(m.group(1)), m.group(2)
    steps_raw = split_top(text, ".")
    steps, resolves_to = [], None
    for step in steps_raw:
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)(\[\d+\])?", step)
        if m:
            steps.append((m.group(1), None))
            continue
        m = re.fullmatch(r"(as|ofType)\(([A-Za-z]+)\)", step)
        if m:
            if steps:
                steps[-1] = (steps[-1][0], m.group(2))
            continue
        m = re.fullmatch(r"where\(resolve\(\) is ([A-Za-z]+)\)", step)
        if m:
            resolves_to = m.group(1)
            continue
        m = re.fullmatch(r"(where|exists)\(.*\)", step, re.S)
        if m:
            continue
        m = re.fullmatch(r"extension\('([^']*)'\)", step)
        if m:
            steps.append(("extension", None))
            continue
        if step == "resolve()":
            continue
        return None
    if cast and steps:
        steps[-1] = (steps[-1][0], cast)
    return steps, resolves_to


class Resolver:
    def __init__(self, definitions):
        self.d = definitions

    def resolve(self, steps):
        """Every (json path, kind) the steps reach; the first step is the resource type."""
        if not steps:
            return []
        type_name = steps[0][0]
        if type_name not in self.d.structs:
            return []
        # (json path, struct, kind of last, targets of last)
        frontier = [(type_name, type_name, None, None)]
        for name, cast in steps[1:]:
            following = []
            for path, struct, last, targets in frontier:
                if struct is None:
                    continue
                if name == "extension":
                    following.append((path + ".extension", "Extension", "s:Extension", None))
                    continue
                if last in ("c+", "c-") and name == "reference":
                    # A CodeableReference's reference: its targets are the element's.
                    following.append((path + ".reference", None, "r" + last[1], targets))
                    continue
                for json_name, kind in self.d.elements.get(struct, {}).get(name, []):
                    if cast and json_name != name and json_name != name + capitalized(cast):
                        continue
                    if cast and json_name == name and kind not in (None,) and not kind_is(kind, cast):
                        continue
                    child_struct = kind[2:] if kind and kind.startswith("s:") else None
                    if kind in ("c+", "c-"):
                        child_struct = "CodeableReference"
                    targets = self.d.ref_targets.get(struct + "." + json_name)
                    following.append((path + "." + json_name, child_struct, kind, targets))
            frontier = following
        return [(path, kind, targets) for path, _, kind, targets in frontier]


def kind_is(kind, cast):
    if cast == "Reference":
        return kind in ("r+", "r-")
    if cast == "CodeableReference":
        return kind in ("c+", "c-")
    return kind == "s:" + cast


def search_facts(definitions, found):
    """resource type -> {code: (only_patient, [(json path, kind)])} for reference
    parameters whose value may be a Patient; and every reference parameter's paths by type."""
    resolver = Resolver(definitions)
    patient_params = {}
    all_params = {}
    for sp in sorted(found.get("SearchParameter", []), key=lambda s: (s.get("code", ""), s.get("id", ""))):
        if sp.get("type") != "reference":
            continue
        url = sp.get("url", "")
        if not url.startswith("http://hl7.org/fhir/SearchParameter/"):
            continue
        if sp.get("id", "").startswith("example"):
            continue  # the specification's examples of how to define a parameter
        code = sp["code"]
        bases = sp.get("base", [])
        bases = [bases] if isinstance(bases, str) else bases
        targets = sp.get("target", [])
        expression = sp.get("expression") or ""
        parts = split_top(expression, "|") if expression else []
        for base in bases:
            if base not in definitions.resources:
                continue
            reached = []
            parsed_all = True
            reaches_others = False
            for part in parts:
                stripped = strip_parens(part)
                if not (stripped.startswith(base + ".") or stripped == base):
                    continue
                parsed = parse_path(part)
                if parsed is None:
                    warn(f"{sp['id']}: cannot read {part!r}")
                    parsed_all = False
                    continue
                steps, resolves_to = parsed
                for path, kind, element_targets in resolver.resolve(steps):
                    if kind not in ("r+", "r-", "c+", "c-"):
                        continue  # `actor[x]`'s canonical, a resource: not a reference
                    if kind in ("c+", "c-"):
                        path, kind = path + ".reference", "r" + kind[1]
                    may = kind == "r+" and resolves_to in (None, "Patient")
                    reached.append((path, kind, may))
                    if may and resolves_to != "Patient" and element_targets != ["Patient"]:
                        reaches_others = True
            if not reached and parsed_all:
                continue
            all_params.setdefault(base, {})[code] = sorted({p for p, _, _ in reached})
            # A bare id names a Patient only when nothing else can be meant.
            only_patient = targets == ["Patient"] or (parsed_all and not reaches_others)
            target_patient = not targets or "Patient" in targets
            may = any(m for _, _, m in reached) or (not parsed_all and target_patient)
            if may and not target_patient:
                warn(f"{sp['id']}: elements may be a Patient, target says not: {targets}")
                may = False
            if may:
                patient_params.setdefault(base, {})[code] = (
                    only_patient,
                    sorted({p for p, _, m in reached if m}),
                )
    return patient_params, all_params


def live_structs(structs):
    """The structures from which a Reference, CodeableReference, resource or location can be
    reached (extensions aside: the walker reads every extension). A field of any other
    structure is left out of the tables: the walker reads what it does not know as it reads
    anything unknown, which for valid data of such a structure finds nothing."""
    live = set()
    changed = True
    while changed:
        changed = False
        for name, fields in structs.items():
            if name in live:
                continue
            if any(not v.startswith("s:") or v[2:] in live for v in fields.values()):
                live.add(name)
                changed = True
    return live


def must_be_patient(d, path):
    """An element the compartment definition reads may be a Patient, whatever its
    targetProfile says (STU3 lists DeviceRequest.requester, whose agent cannot be one)."""
    steps = path.split(".")
    owner, site = steps[0], None
    for step in steps[1:]:
        if owner == "CodeableReference" and step == "reference" and site:
            break  # the CodeableReference's own reference: the site is the element
        kind = d.structs.get(owner, {}).get(step)
        if kind is None:
            return
        site = (owner, step)
        if kind.startswith("s:"):
            owner = kind[2:]
        elif kind[0] == "c":
            owner = "CodeableReference"
        elif kind[0] == "r":
            owner = "Reference"
        else:
            return
    if site is None:
        return
    struct, field = site
    kind = d.structs[struct][field]
    if kind in ("r-", "c-"):
        warn(f"{path}: in the Patient compartment, but its targets exclude Patient: read as may")
        d.structs[struct][field] = kind[0] + "+"


def compartment(found):
    for cd in found.get("CompartmentDefinition", []):
        if cd.get("url") == "http://hl7.org/fhir/CompartmentDefinition/patient" or cd.get("code") == "Patient":
            return cd
    sys.exit("no Patient CompartmentDefinition in the definitions")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", required=True, help="stu3, r4, r4b or r5")
    parser.add_argument("--source", required=True, help="package@version the definitions are from")
    parser.add_argument("definitions")
    parser.add_argument("out")
    args = parser.parse_args()

    found = load(args.definitions)
    d = Definitions(found)
    patient_params, all_params = search_facts(d, found)
    cd = compartment(found)

    lines = [
        "# Generated by fhir/data/generate.py: do not edit. Facts from the official definitions of",
        f"# FHIR {args.version}, {args.source}: CompartmentDefinition-patient, SearchParameter-*,",
        "# StructureDefinition-* (resources and data types). Format: fhir/data/README.md.",
        f"version\t{args.version}",
        f"source\t{args.source}",
    ]
    for t in d.resources:
        lines.append(f"type\t{t}")
    for r in sorted(cd.get("resource", []), key=lambda r: r["code"]):
        params = r.get("param", [])
        if r["code"] not in d.by_type:
            warn(f"compartment names unknown type {r['code']}")
            continue
        for p in params:
            # `agent.patient` (STU3 AuditEvent): the elements of the parameter chained from
            paths = all_params.get(r["code"], {}).get(p.split(".")[0])
            if p == "{def}":
                paths = []  # the Patient itself
            if paths is None:
                warn(f"compartment {r['code']}.{p}: no reference search parameter")
                paths = []
            for path in paths:
                must_be_patient(d, path)
            lines.append(f"compartment\t{r['code']}\t{p}\t{','.join(paths)}")
    for t in sorted(patient_params):
        for code, (only_patient, paths) in sorted(patient_params[t].items()):
            lines.append(f"search\t{t}\t{code}\t{'patient' if only_patient else 'any'}\t{','.join(paths)}")
    for t in d.resources:
        cells = []
        for json_name, base, summary, mandatory in sorted(d.top.get(t, [])):
            flags = ("S" if summary else "") + ("M" if mandatory else "")
            cells.append(f"{json_name}:{base}:{flags}")
        lines.append(f"top\t{t}\t{' '.join(cells)}")
    live = live_structs(d.structs)
    for name in sorted(d.structs):
        fields = {
            k: v for k, v in d.structs[name].items() if not v.startswith("s:") or v[2:] in live
        }
        if not fields:
            continue
        cells = [f"{k}={v}" for k, v in sorted(fields.items())]
        lines.append(f"struct\t{name}\t{' '.join(cells)}")
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
