#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ (issue 11) for a bounded time each.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default 300 s, every target)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz needs nightly compiler flags; on a
# stable toolchain RUSTC_BOOTSTRAP=1 enables them (set here unless already set). Corpora go
# to fuzz/corpus/<target>, crashes to fuzz/artifacts/<target> (both ignored by git); a crash
# stops the script with the reproduction command (`cargo fuzz run <target> <artifact>`).
# `fhir_request` and `search_form` link the gateway (feature `gateway`): a longer first build.
set -euo pipefail

seconds="${1:-300}"
shift || true
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

all=(request_parser smart_scopes compartment_json compartment_structured fhir_request search_form)
targets=("${@:-${all[@]}}")

features_of() {
    case "$1" in
        fhir_request | search_form) echo "--features gateway" ;;
        *) echo "" ;;
    esac
}

for target in "${targets[@]}"; do
    echo "== $target: ${seconds} s"
    mkdir -p "corpus/$target"
    dict=()
    if [ -f "dict/$target.dict" ]; then
        dict=("-dict=dict/$target.dict")
    fi
    # shellcheck disable=SC2046
    cargo fuzz run -O $(features_of "$target") "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096 \
        ${dict[@]+"${dict[@]}"}
done
echo "== every target ran ${seconds} s without a crash"
