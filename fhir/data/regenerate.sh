#!/bin/sh
# Regenerates fhir/data/patient-compartment-{stu3,r4,r4b,r5}.tsv from the official FHIR
# packages on the npm registry (needs npm, python3 and the network). The packages are
# unpacked in a temporary directory and removed; only the generated facts are kept.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

generate() {
    version=$1
    package=$2
    mkdir "$work/$version"
    (cd "$work/$version" && npm pack --silent "$package" >/dev/null && tar xzf ./*.tgz)
    python3 "$here/generate.py" --version "$version" --source "$package" \
        "$work/$version/package" "$here/patient-compartment-$version.tsv"
}

generate stu3 hl7.fhir.r3.examples@3.0.2
generate r4 hl7.fhir.r4.examples@4.0.1
generate r4b hl7.fhir.r4b.core@4.3.0
generate r5 hl7.fhir.r5.core@5.0.0
