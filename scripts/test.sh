#!/usr/bin/env bash
# The test command (README.md): sets up what the tests need on a fresh machine, then runs the
# format check, clippy with warnings as errors, and every test of the workspace, with the store
# tests and end-to-end tests on SQLite and on PostgreSQL. The translation corpus runs with
# fhir-sdk's typed models (feature `typed-check`) and its outputs are validated with
# fhir.resources (PyPI, pinned, in a virtual environment).
#
# Environment:
#   ASSENT_TEST_DATABASE_URL  PostgreSQL for the tests (default: the machine's local server).
#   ASSENT_TEST_REDIS_URL     Redis for the cross-replica cache tests (default: the local one).
#   ASSENT_FHIR_EXAMPLES      the official FHIR examples (default: ../shared/data/fhir-examples).
#   ASSENT_PY_VENV            the validator's virtual environment (default: target/validate-venv).
#   CI                        when set, a missing service is an error instead of a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

note() { printf '== %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

# PostgreSQL: start the local cluster if it is down, then require it under CI.
export ASSENT_TEST_DATABASE_URL="${ASSENT_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  note "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if pg_up && psql "$ASSENT_TEST_DATABASE_URL" -qtAc 'select 1' >/dev/null 2>&1; then
  note "PostgreSQL reachable: store and end-to-end tests run on SQLite and PostgreSQL"
elif [ -n "${CI:-}" ]; then
  fail "PostgreSQL is unreachable at $ASSENT_TEST_DATABASE_URL"
else
  printf 'warning: PostgreSQL unreachable; tests run on SQLite only\n' >&2
  unset ASSENT_TEST_DATABASE_URL
fi

# Redis: start a local server if it is down, then require it under CI.
export ASSENT_TEST_REDIS_URL="${ASSENT_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
redis_up() { command -v redis-cli >/dev/null 2>&1 && [ "$(redis-cli -u "$ASSENT_TEST_REDIS_URL" ping 2>/dev/null)" = "PONG" ]; }
if ! redis_up && command -v redis-server >/dev/null 2>&1; then
  note "starting Redis"
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes >/dev/null || true
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi
if redis_up; then
  note "Redis reachable: the cross-replica cache tests run"
elif [ -n "${CI:-}" ]; then
  fail "Redis is unreachable at $ASSENT_TEST_REDIS_URL"
else
  printf 'warning: Redis unreachable; the cross-replica cache tests are skipped\n' >&2
  unset ASSENT_TEST_REDIS_URL
fi

# Official FHIR examples for the translation corpus and consent tests.
if [ -z "${ASSENT_FHIR_EXAMPLES:-}" ] && [ -d "$root/../shared/data/fhir-examples" ]; then
  ASSENT_FHIR_EXAMPLES="$(cd "$root/../shared/data/fhir-examples" && pwd)"
fi
export ASSENT_FHIR_EXAMPLES="${ASSENT_FHIR_EXAMPLES:-}"
if [ -z "$ASSENT_FHIR_EXAMPLES" ] && [ -n "${CI:-}" ]; then
  fail "the official FHIR examples (../shared/data/fhir-examples) are missing"
fi

# The real OpenID Connect provider for the authentication end-to-end tests (npm, pinned).
if [ -f tests/oidc-provider/package-lock.json ]; then
  command -v npm >/dev/null 2>&1 || fail "npm is needed for the OpenID Connect provider tests"
  if [ ! -d tests/oidc-provider/node_modules ] || [ tests/oidc-provider/package-lock.json -nt tests/oidc-provider/node_modules ]; then
    note "installing the OpenID Connect provider (npm ci)"
    npm ci --prefix tests/oidc-provider --no-audit --no-fund --loglevel=error
  fi
fi

# The realistic FHIR upstream of the end-to-end tests: Medplum's fhir-router with its in-memory
# repository, wrapped by tests/fhir-server/server.mjs (npm, pinned). Medplum 5 declares Node 22;
# on Node 20 it runs with --experimental-websocket, which the harness passes.
if [ -f tests/fhir-server/package-lock.json ]; then
  command -v npm >/dev/null 2>&1 || fail "npm is needed for the realistic FHIR upstream of the end-to-end tests"
  if [ ! -d tests/fhir-server/node_modules ] || [ tests/fhir-server/package-lock.json -nt tests/fhir-server/node_modules ]; then
    note "installing the realistic FHIR upstream (npm ci)"
    npm ci --prefix tests/fhir-server --no-audit --no-fund --loglevel=error
  fi
fi

# axe-core, the accessibility check the portal's Chromium test runs in the browser (npm, pinned).
if [ -f tests/a11y/package-lock.json ]; then
  command -v npm >/dev/null 2>&1 || fail "npm is needed for the portal's accessibility check"
  if [ ! -d tests/a11y/node_modules ] || [ tests/a11y/package-lock.json -nt tests/a11y/node_modules ]; then
    note "installing axe-core (npm ci)"
    npm ci --prefix tests/a11y --no-audit --no-fund --loglevel=error
  fi
fi

# A real FHIR client library run against the gateway by the end-to-end tests (npm, pinned).
if [ -f tests/fhir-clients/package-lock.json ]; then
  command -v npm >/dev/null 2>&1 || fail "npm is needed for the FHIR client library tests"
  if [ ! -d tests/fhir-clients/node_modules ] || [ tests/fhir-clients/package-lock.json -nt tests/fhir-clients/node_modules ]; then
    note "installing the FHIR client library fixture (npm ci)"
    npm ci --prefix tests/fhir-clients --no-audit --no-fund --loglevel=error
  fi
fi

# A FHIR client library whose HTTP layer re-encodes the links it follows (fhirpy, pip, pinned).
fhirpy_venv=tests/fhir-clients/.venv
if [ -f tests/fhir-clients/requirements.txt ]; then
  command -v python3 >/dev/null 2>&1 || fail "python3 is needed for the FHIR client library tests"
  if [ ! -x "$fhirpy_venv/bin/python" ] || ! cmp -s tests/fhir-clients/requirements.txt "$fhirpy_venv/.requirements"; then
    note "installing fhirpy in $fhirpy_venv (pip, pinned)"
    rm -rf "$fhirpy_venv"
    python3 -m venv "$fhirpy_venv"
    "$fhirpy_venv/bin/pip" install --quiet --disable-pip-version-check -r tests/fhir-clients/requirements.txt
    cp tests/fhir-clients/requirements.txt "$fhirpy_venv/.requirements"
  fi
fi

# Headless Chromium and chromedriver for the compliance console's browser test (Debian
# packages). Installed under CI when missing; elsewhere the browser test is skipped with a note.
if ! command -v chromedriver >/dev/null 2>&1; then
  if [ -n "${CI:-}" ]; then
    note "installing chromium and chromium-driver"
    command -v apt-get >/dev/null 2>&1 || fail "chromedriver is missing and apt-get is unavailable"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    printf 'warning: chromedriver missing (apt-get install chromium chromium-driver); the console browser test is skipped\n' >&2
  fi
fi

# The independent validator of the translation corpus's outputs (pip, pinned).
py_venv="${ASSENT_PY_VENV:-$root/target/validate-venv}"
validator=""
if [ -n "$ASSENT_FHIR_EXAMPLES" ]; then
  if command -v python3 >/dev/null 2>&1; then
    stamp="$py_venv/.requirements"
    if [ ! -x "$py_venv/bin/python" ] || ! cmp -s scripts/validate_fhir.requirements.txt "$stamp"; then
      note "installing fhir.resources in $py_venv (pip, pinned)"
      rm -rf "$py_venv"
      python3 -m venv "$py_venv"
      "$py_venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/validate_fhir.requirements.txt
      cp scripts/validate_fhir.requirements.txt "$stamp"
    fi
    validator="$py_venv/bin/python"
  elif [ -n "${CI:-}" ]; then
    fail "python3 is needed to validate the translation corpus"
  else
    printf 'warning: python3 missing; the corpus outputs are not validated\n' >&2
  fi
fi

note "cargo fmt --check"
cargo fmt --all -- --check

note "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

note "cargo test"
corpus_out="$root/target/corpus-out"
audit_out="$root/target/audit-out"
rm -rf "$audit_out"
ASSENT_CORPUS_OUT="$corpus_out" ASSENT_AUDIT_OUT="$audit_out" \
  cargo test --workspace --locked --features assent-adapters/typed-check

if [ -n "$validator" ]; then
  note "validating the translation corpus's outputs (fhir.resources)"
  "$validator" scripts/validate_fhir.py "$corpus_out" scripts/validate_fhir_exceptions.tsv
  note "validating the audit API's AuditEvents in every version (fhir.resources)"
  "$validator" scripts/validate_fhir.py --plain "$audit_out"
fi
