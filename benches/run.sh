#!/usr/bin/env bash
# Benchmarks: measures, then rewrites BENCHMARKS.md. Never part of the test suite.
#
#   P1  throughput through the gateway ÷ straight to the same trivial upstream (1 KB Patient)
#       and ÷ through nginx (the reference reverse proxy: one worker, an upstream keepalive pool
#       larger than the load's connections, no auth), at CONNECTIONS and CONNECTIONS_HIGH,
#       rotating direct / nginx / gateway in one run, medians of the per-round ratios (wrk).
#   P10e the same read through the gateway asked in R5 (parsed, translated from the site's R4)
#       ÷ asked in the site's own version (untranslated), alternating, median of the ratios.
#   P3  user-space instructions per proxied request: callgrind over N and 6N requests on one
#       keep-alive connection, (Ir(6N) − Ir(N)) / 5N, for the gateway and for nginx.
#   P7  receipts: durably recorded per second through the gateway's receipt writer (SQLite,
#       and PostgreSQL when ASSENT_BENCH_DATABASE_URL names a scratch database: the bench
#       migrates it and leaves its tables), and end-to-end throughput with
#       receipts on ÷ off (a second build with the benchmark-only feature bench-no-receipts).
#   P8  receipt commit → anchored on the embedded ledger.
#   Micro-benchmarks the crates carry (criterion / release tests), when present, and
#   `federation_bench` (issue 17: federated $everything over three FAKE sites, added latency
#   over the slowest site and throughput ÷ the three direct requests) and
#   `consent_bench` (P5 decisions at the gateway's consent service, P9 revocation → deny; the
#   cross-replica part needs Redis: ASSENT_BENCH_REDIS_URL, default redis://127.0.0.1:6379;
#   PostgreSQL when ASSENT_TEST_DATABASE_URL is set, else SQLite).
#   Fabric: consent write latency (submit → commit), evaluate latency and anchors per second
#       through the gateway's Fabric backend (`fabric_bench`): against the real network when
#       ASSENT_FABRIC_TEST_CONFIG names one (skipped with a notice otherwise), and always
#       against the in-process FAKE Fabric, labelled as such.
#
#   MEM  the gateway's resident memory: idle (VmRSS after start and one request) and under the
#       CONNECTIONS_HIGH load (peak VmHWM, and the largest VmRSS sampled), from /proc/PID/status.
#   LAT  added latency, open loop: the gateway's closed-loop maximum rate (wrk at
#       CONNECTIONS_HIGH), then `oha -q RATE/2 --latency-correction` straight to the upstream and
#       through the gateway; `fsync_probe` measures fdatasync p50/p99 on the receipt log's disk
#       during the gateway's run (the same run).
#
# Usage: bash benches/run.sh [--only PARTS]
#   PARTS: a comma-separated list of p1, p7, p10e, receipts (the writer: P7/P8), p3, mem, lat,
#   micro, fabric. With --only the figures are printed and BENCHMARKS.md is left alone; two
#   parts exist only there: `p3cg` (P3 for the gateway alone, keeping the callgrind files in
#   P3_KEEP, default /tmp/assent-p3) and `receipts-cg` (instructions per receipt of the writer
#   under callgrind: RECEIPTS_CG_N and 6N receipts).
# BENCH_BIN=DIR: take the release binaries from DIR and build nothing (to measure a baseline).
# BENCH_QUICK=1: a smoke run (1 pair of 2 s, N_CALLGRIND=20, no micro-benchmarks) that
#   writes BENCHMARKS.quick.md instead of BENCHMARKS.md.
#
# Needs: wrk, valgrind and nginx (Debian packages; installed here when missing and we are root)
# and, for LAT, oha (crates.io: `cargo install oha --locked` when missing).
# Environment: PAIRS (default 3), SECONDS_EACH (default 8), CONNECTIONS (default 32),
#              CONNECTIONS_HIGH (default 256),
#              N_CALLGRIND (default 200); ASSENT_FABRIC_TEST_CONFIG (a JSON FabricConfig),
#              ASSENT_FABRIC_VERSION and ASSENT_FABRIC_BATCH_TIMEOUT (reported with the real
#              network's figures); FABRIC_ONLY=1 runs only the Fabric part and replaces the
#              Fabric section of an existing BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PAIRS=${PAIRS:-3}
SECONDS_EACH=${SECONDS_EACH:-8}
CONNECTIONS=${CONNECTIONS:-32}
CONNECTIONS_HIGH=${CONNECTIONS_HIGH:-256}
N_CALLGRIND=${N_CALLGRIND:-200}
LAT_SECONDS=${LAT_SECONDS:-10}
RECEIPTS_SECONDS=${RECEIPTS_SECONDS:-5}
RECEIPTS_CG_N=${RECEIPTS_CG_N:-2000}
P3_KEEP=${P3_KEEP:-/tmp/assent-p3}
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY=${2:?--only needs a list of parts}; shift 2 ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    *) echo "usage: bash benches/run.sh [--only p1,p7,p10e,receipts,p3,p3cg,receipts-cg,mem,lat,micro,fabric]" >&2; exit 2 ;;
  esac
done
OUT=BENCHMARKS.md
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  PAIRS=1; SECONDS_EACH=2; N_CALLGRIND=20; LAT_SECONDS=2; RECEIPTS_SECONDS=1; RECEIPTS_CG_N=200
  MICRO=0
  OUT=BENCHMARKS.quick.md
fi
# wants PART: is PART measured in this run?
wants() {
  if [ -z "$ONLY" ]; then
    case "$1" in p3cg | receipts-cg) return 1 ;; *) return 0 ;; esac
  fi
  [[ ",$ONLY," == *",$1,"* ]]
}

need() {
  command -v "$1" >/dev/null 2>&1 && return
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; }
  fi
  command -v "$1" >/dev/null 2>&1 || { echo "error: $1 is needed (apt-get install $2)" >&2; exit 1; }
}
cargo_target="${CARGO_TARGET_DIR:-$root/target}"
bin="$cargo_target/release"
bin_off="$root/target/no-receipts/release"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Fabric: the real network when configured, and the FAKE for scale; a Markdown section.
fabric_section() { # → stdout
  printf '## Fabric backend — consent writes, evaluates, anchors\n\n'
  printf 'Through `FabricLedger`, the gateway'"'"'s Fabric backend (`benches/src/bin/fabric_bench.rs`):\n'
  printf 'sequential consent writes (Endorse → Submit → CommitStatus: submit to commit), sequential\n'
  printf 'evaluates (a patient'"'"'s consents in force: the decision cache'"'"'s miss path), and\n'
  printf 'receipt anchors recorded by concurrent writers. Measured %s (%s cores, load average %s).\n\n' \
    "$(date -u +%Y-%m-%d)" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)"
  printf '### Real network\n\n'
  if [ -n "${ASSENT_FABRIC_TEST_CONFIG:-}" ]; then
    printf 'Fabric %s, batch timeout %s.\n\n' \
      "${ASSENT_FABRIC_VERSION:-(version not given: set ASSENT_FABRIC_VERSION)}" \
      "${ASSENT_FABRIC_BATCH_TIMEOUT:-(not given: set ASSENT_FABRIC_BATCH_TIMEOUT)}"
    "$bin/fabric_bench"
  else
    echo "Fabric: skipped the real network: set ASSENT_FABRIC_TEST_CONFIG to a JSON FabricConfig (docs/fabric.md)" >&2
    printf 'Not measured in this run: `ASSENT_FABRIC_TEST_CONFIG` was not set.\n'
  fi
  printf '\n### The FAKE Fabric, for scale (not Fabric)\n\n'
  printf 'One in-process fake gateway peer driving the real chaincode server over the shim\n'
  printf 'protocol, blocks cut every 15 ms, no orderer, no other organizations: what the client,\n'
  printf 'the shim and the contract cost. Not a measure of a Fabric network.\n\n'
  "$bin/fabric_bench" --fake
}

if [ "${FABRIC_ONLY:-0}" = 1 ]; then
  cargo build --release -q -p assent-benches --bin fabric_bench
  section=$(fabric_section)
  if [ -f BENCHMARKS.md ]; then
    sed '/^## Fabric backend/,$d' BENCHMARKS.md > "$work/bench.md"
  else
    printf '# Benchmarks\n\n' > "$work/bench.md"
  fi
  { cat "$work/bench.md"; printf '%s\n' "$section"; } > BENCHMARKS.md
  echo "wrote the Fabric section of BENCHMARKS.md"
  exit 0
fi

if wants p1 || wants p7 || wants p10e || wants mem || wants lat; then need wrk wrk; fi
if wants p3 || wants p3cg || wants receipts-cg; then need valgrind valgrind; fi
if wants p1 || wants p3; then need nginx nginx; fi
PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"  # where `cargo install` puts oha
if wants lat && ! command -v oha >/dev/null 2>&1; then
  cargo install -q --locked oha || { echo "error: oha is needed for the latency run (cargo install oha)" >&2; exit 1; }
fi

if [ -n "${BENCH_BIN:-}" ]; then
  bin=$BENCH_BIN  # binaries built elsewhere (a baseline): nothing is built
else
  cargo build --release -q -p assent-gateway -p assent-benches
fi
if wants p7; then
  cargo build --release -q -p assent-gateway --features bench-no-receipts --target-dir "$root/target/no-receipts"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "error: $1 did not come up" >&2; exit 1; }

# The trivial upstream.
up_port=$(free_port)
"$bin/trivial_upstream" "127.0.0.1:$up_port" > "$work/upstream.log" 2>&1 &
pids+=($!)
upstream="http://127.0.0.1:$up_port"
wait_http "$upstream/fhir/Patient/bench-1"

# nginx, the reference reverse proxy, in front of the same upstream. `master_process off`:
# one process that is the one worker (so callgrind sees it whole).
nginx_conf() { # port, name → config file
  mkdir -p "$work/nginx"
  cat > "$work/nginx/$2.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $work/nginx/$2.pid;
error_log $work/nginx/$2.error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream fhir {
    server 127.0.0.1:$up_port;
    keepalive 1024;
  }
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://fhir;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  echo "$work/nginx/$2.conf"
}

# A DEMO identity provider mints the clinician's token the gateway verifies (and caches).
audience="https://assent.bench/fhir"
"$bin/bench_idp" "$audience" > "$work/idp.out" 2> "$work/idp.log" &
pids+=($!)
for _ in $(seq 1 200); do grep -q '^token=' "$work/idp.out" 2>/dev/null && break; sleep 0.05; done
issuer=$(sed -n 's/^issuer=//p' "$work/idp.out")
key=$(sed -n 's/^token=//p' "$work/idp.out")
[ -n "$key" ] || { echo "error: the bench identity provider did not start" >&2; exit 1; }
# The gateways' keys, apart from their databases (docs/keys.md).
rm -f "$work/keys.toml"
"$bin/assent" keys generate --out "$work/keys.toml" > /dev/null
write_config() {
  cat > "$1" <<EOF
listen = "127.0.0.1:$2"
database_url = "$work/$3.db"
gateway_id = "bench"
[keys]
file = "$work/keys.toml"
[log]
format = "text"
level = "error"
access_log = false
[[auth.issuers]]
issuer = "$issuer"
audience = ["$audience"]
[sites.bench]
upstream = "$upstream/fhir"
fhir_version = "R4"
default_policy = "opt-out"
EOF
}
start_gateway() { # name → sets gw_pid and gw_port: `assent serve --workers 1` on a fresh database
  gw_port=$(free_port)
  write_config "$work/$1.toml" "$gw_port" "$1"
  "$bin/assent" serve --config "$work/$1.toml" --workers 1 > "$work/$1.log" 2>&1 &
  gw_pid=$!
  pids+=($gw_pid)
  wait_http "http://127.0.0.1:$gw_port/livez"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

rps() { # url, extra wrk args → requests/s (at $CONNECTIONS)
  wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" "$@" | awk '/Requests\/sec/ {print $2}'
}
rps_at() { # connections, url, extra wrk args → requests/s
  local c=$1; shift
  wrk -t1 -c"$c" -d"${SECONDS_EACH}s" "$@" | awk '/Requests\/sec/ {print $2}'
}
median_of() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
summary=""  # what an --only run prints at the end
say() { echo "$1"; summary+="$1"$'\n'; }

p1_md=""
if wants p1 || wants p7 || wants p10e; then
  start_gateway gw
  gateway="http://127.0.0.1:$gw_port"
fi
if wants p1; then
  ng_port=$(free_port)
  nginx -c "$(nginx_conf "$ng_port" wrk)" > "$work/nginx.log" 2>&1 &
  ng_pid=$!
  pids+=($ng_pid)
  nginx_url="http://127.0.0.1:$ng_port"
  wait_http "$nginx_url/fhir/Patient/bench-1"
  for conns in "$CONNECTIONS" "$CONNECTIONS_HIGH"; do
    echo "P1: $PAIRS rounds of ${SECONDS_EACH}s, $conns connections: direct, nginx, gateway"
    r_direct=(); r_nginx=(); rows=""
    for i in $(seq 1 "$PAIRS"); do
      direct=$(rps_at "$conns" "$upstream/fhir/Patient/bench-1")
      ng=$(rps_at "$conns" "$nginx_url/fhir/Patient/bench-1")
      via=$(rps_at "$conns" -H "Authorization: Bearer $key" "$gateway/fhir/bench/Patient/bench-1")
      rd=$(python3 -c "print(f'{$via/$direct:.3f}')")
      rn=$(python3 -c "print(f'{$via/$ng:.3f}')")
      r_direct+=("$rd"); r_nginx+=("$rn")
      rows+="| $i | $direct | $ng | $via | $rd | $rn |"$'\n'
      echo "  round $i: direct $direct, nginx $ng, gateway $via req/s; gateway ÷ direct $rd, ÷ nginx $rn"
    done
    md=$(median_of "${r_direct[@]}"); mn=$(median_of "${r_nginx[@]}")
    say "P1 medians at c=$conns: gateway ÷ direct $md, gateway ÷ nginx $mn"
    p1_md+="### \`wrk -t1 -c$conns -d${SECONDS_EACH}s\`"$'\n\n'
    p1_md+="| round | direct req/s | nginx req/s | gateway req/s | gateway ÷ direct | gateway ÷ nginx |"$'\n'
    p1_md+="|---|---|---|---|---|---|"$'\n'
    p1_md+="$rows"$'\n'
    p1_md+="**Medians at c=$conns: gateway ÷ direct $md, gateway ÷ nginx $mn.**"$'\n\n'
  done
  stop "$ng_pid"
fi

p7_rows=""; p7_median=""
if wants p7; then
  echo "P7 end to end: receipts on ÷ off, $PAIRS pairs"
  off_port=$(free_port)
  write_config "$work/off.toml" "$off_port" off
  "$bin_off/assent" serve --config "$work/off.toml" --workers 1 > "$work/off.log" 2>&1 &
  off_pid=$!
  pids+=($off_pid)
  wait_http "http://127.0.0.1:$off_port/livez"
  p7_ratios=()
  for i in $(seq 1 "$PAIRS"); do
    off=$(rps -H "Authorization: Bearer $key" "http://127.0.0.1:$off_port/fhir/bench/Patient/bench-1")
    on=$(rps -H "Authorization: Bearer $key" "$gateway/fhir/bench/Patient/bench-1")
    ratio=$(python3 -c "print(f'{$on/$off:.3f}')")
    p7_ratios+=("$ratio")
    p7_rows+="| $i | $off | $on | $ratio |"$'\n'
    echo "  pair $i: receipts off $off req/s, on $on req/s, ratio $ratio"
  done
  p7_median=$(median_of "${p7_ratios[@]}")
  say "P7 median receipts on ÷ off: $p7_median"
  stop "$off_pid"
fi

t_rows=""; t_median=""
if wants p10e; then
  echo "P10e: translated (R5) vs untranslated (R4) reads through the gateway"
  t_ratios=()
  for i in $(seq 1 "$PAIRS"); do
    plain=$(rps -H "Authorization: Bearer $key" "$gateway/fhir/bench/Patient/bench-1")
    translated=$(rps -H "Authorization: Bearer $key" -H "Accept: application/fhir+json; fhirVersion=5.0" "$gateway/fhir/bench/Patient/bench-1")
    ratio=$(python3 -c "print(f'{$translated/$plain:.3f}')")
    t_ratios+=("$ratio")
    t_rows+="| $i | $plain | $translated | $ratio |"$'\n'
    echo "  pair $i: R4 (untranslated) $plain req/s, R5 (translated) $translated req/s, ratio $ratio"
  done
  t_median=$(median_of "${t_ratios[@]}")
  say "P10e median R5 ÷ R4: $t_median"
fi
if wants p1 || wants p7 || wants p10e; then stop "$gw_pid"; fi

# MEM: resident memory of a fresh gateway, idle and under the high load.
mem_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
mem_md=""
if wants mem; then
  echo "MEM: idle, then under wrk -t1 -c$CONNECTIONS_HIGH -d${SECONDS_EACH}s"
  start_gateway mem
  mem_url="http://127.0.0.1:$gw_port/fhir/bench/Patient/bench-1"
  curl -s -o /dev/null -H "Authorization: Bearer $key" "$mem_url"
  sleep 1
  idle_rss=$(mem_kb "$gw_pid" VmRSS)
  idle_hwm=$(mem_kb "$gw_pid" VmHWM)
  wrk -t1 -c"$CONNECTIONS_HIGH" -d"${SECONDS_EACH}s" -H "Authorization: Bearer $key" "$mem_url" > "$work/mem.wrk" &
  wrk_pid=$!
  sampled=0
  while kill -0 "$wrk_pid" 2>/dev/null; do
    r=$(mem_kb "$gw_pid" VmRSS)
    [ "${r:-0}" -gt "$sampled" ] && sampled=$r
    sleep 0.2
  done
  wait "$wrk_pid" || true
  load_hwm=$(mem_kb "$gw_pid" VmHWM)
  after_rss=$(mem_kb "$gw_pid" VmRSS)
  mem_rps=$(awk '/Requests\/sec/ {print $2}' "$work/mem.wrk")
  stop "$gw_pid"
  mib() { python3 -c "print(f'{$1/1024:.1f}')"; }
  say "MEM idle VmRSS $(mib "$idle_rss") MiB (VmHWM $(mib "$idle_hwm") MiB); under c=$CONNECTIONS_HIGH ($mem_rps req/s): VmHWM $(mib "$load_hwm") MiB, largest VmRSS sampled $(mib "$sampled") MiB, VmRSS after $(mib "$after_rss") MiB"
  mem_md="| state | VmRSS MiB | VmHWM (peak) MiB |"$'\n'"|---|---|---|"$'\n'
  mem_md+="| idle (started, one request, 1 s) | $(mib "$idle_rss") | $(mib "$idle_hwm") |"$'\n'
  mem_md+="| under \`wrk -t1 -c$CONNECTIONS_HIGH -d${SECONDS_EACH}s\` ($mem_rps req/s) | $(mib "$sampled") (largest sampled every 0.2 s) | $(mib "$load_hwm") |"$'\n'
  mem_md+="| after the load | $(mib "$after_rss") | |"$'\n'
fi

# LAT: open-loop latency at half the gateway's maximum rate, straight and through the gateway,
# with fdatasync latency on the same disk measured during the gateway's run.
lat_md=""
oha_json() { # rate, url, extra oha args → JSON summary on stdout
  local rate=$1 url=$2; shift 2
  local fmt=(-j)
  oha --help 2>&1 | grep -q -- '--output-format' && fmt=(--output-format json)
  oha -z "${LAT_SECONDS}s" -q "$rate" --latency-correction -c "$CONNECTIONS" --no-tui "${fmt[@]}" "$@" "$url"
}
oha_line() { # JSON file → "p50 X µs, p99 Y µs, max Z µs, N req/s, successes S/T"
  python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["latencyPercentiles"]; s = d["summary"]
codes = d.get("statusCodeDistribution", {})
ok = codes.get("200", 0); total = sum(codes.values())
us = lambda v: f"{v * 1e6:.0f}" if v is not None else "n/a"
print(f"p50 {us(p.get('p50'))} µs, p99 {us(p.get('p99'))} µs, max {us(s.get('slowest'))} µs; {s.get('requestsPerSec', 0):.0f} req/s; {ok}/{total} answered 200")
PY
}
oha_pct() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['latencyPercentiles']['$2'] * 1e6)" "$1"; }
if wants lat; then
  echo "LAT: the gateway's maximum rate, then open loop at half of it for ${LAT_SECONDS}s"
  start_gateway lat
  lat_url="http://127.0.0.1:$gw_port/fhir/bench/Patient/bench-1"
  max_rate=$(rps_at "$CONNECTIONS_HIGH" -H "Authorization: Bearer $key" "$lat_url")
  rate=$(python3 -c "print(max(1, int($max_rate / 2)))")
  echo "  maximum $max_rate req/s (wrk -c$CONNECTIONS_HIGH): open loop at $rate req/s"
  oha_json "$rate" "$upstream/fhir/Patient/bench-1" > "$work/lat-direct.json"
  "$bin/fsync_probe" "$work" "$LAT_SECONDS" > "$work/fsync.out" &
  probe_pid=$!
  oha_json "$rate" "$lat_url" -H "Authorization: Bearer $key" > "$work/lat-gateway.json"
  wait "$probe_pid"
  stop "$gw_pid"
  direct_line=$(oha_line "$work/lat-direct.json")
  gateway_line=$(oha_line "$work/lat-gateway.json")
  fsync_line=$(cat "$work/fsync.out")
  added50=$(python3 -c "print(f'{$(oha_pct "$work/lat-gateway.json" p50) - $(oha_pct "$work/lat-direct.json" p50):.0f}')")
  added99=$(python3 -c "print(f'{$(oha_pct "$work/lat-gateway.json" p99) - $(oha_pct "$work/lat-direct.json" p99):.0f}')")
  say "LAT at $rate req/s (half of $max_rate): direct $direct_line"
  say "LAT at $rate req/s: gateway $gateway_line"
  say "LAT added by the gateway: p50 $added50 µs, p99 $added99 µs; $fsync_line"
  lat_md="Open loop at **$rate req/s** (half of the gateway's $max_rate req/s under \`wrk -t1 -c$CONNECTIONS_HIGH\`):"$'\n'
  lat_md+="\`oha -z ${LAT_SECONDS}s -q $rate --latency-correction -c $CONNECTIONS\`, straight to the upstream, then through the"$'\n'
  lat_md+="gateway while \`fsync_probe\` times fdatasync on the receipt log's disk."$'\n\n'
  lat_md+="| | latency |"$'\n'"|---|---|"$'\n'
  lat_md+="| direct | $direct_line |"$'\n'
  lat_md+="| gateway | $gateway_line |"$'\n'
  lat_md+="| added by the gateway | p50 $added50 µs, p99 $added99 µs |"$'\n'
  lat_md+="| same run | $fsync_line |"$'\n'
fi

p7_writer=""
if wants receipts; then
  echo "P7/P8: receipt writer and anchoring"
  p7_writer=$("$bin/receipts_bench" "$work/receipts.db" "$RECEIPTS_SECONDS" 512)
  if [ -n "${ASSENT_BENCH_DATABASE_URL:-}" ]; then
    p7_writer+=$'\n'$("$bin/receipts_bench" "$ASSENT_BENCH_DATABASE_URL" "$RECEIPTS_SECONDS" 512 | grep '^P7')
  fi
  say "$p7_writer"
fi

if wants receipts-cg; then
  echo "P7 under callgrind: RECEIPTS_CG_N=$RECEIPTS_CG_N and 6N receipts through the writer"
  mkdir -p "$P3_KEEP"
  receipts_ir() { # n → total Ir of receipts_bench writing n receipts (64 in flight)
    local out="$P3_KEEP/callgrind.receipts.$1.out"
    RECEIPTS_BENCH_COUNT=$1 valgrind --tool=callgrind --callgrind-out-file="$out" \
      "$bin/receipts_bench" "$work/rcg$1.db" 1 64 > "$work/rcg$1.log" 2>&1
    awk '/^summary:|^totals:/ {print $2; exit}' "$out"
  }
  rc1=$(receipts_ir "$RECEIPTS_CG_N")
  rc6=$(receipts_ir $((6 * RECEIPTS_CG_N)))
  say "P7 instructions per receipt (writer, log, indexer, and building the receipt): Ir(N)=$rc1 Ir(6N)=$rc6 → $(python3 -c "print(round(($rc6 - $rc1) / (5 * $RECEIPTS_CG_N)))") (N=$RECEIPTS_CG_N; files in $P3_KEEP)"
fi

instructions() { # n → total Ir of the gateway serving n requests
  local n=$1 port out
  port=$(free_port)
  write_config "$work/cg.toml" "$port" "cg$n"
  out="$work/callgrind.$n.out"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin/assent" serve --config "$work/cg.toml" --workers 1 > "$work/cg$n.log" 2>&1 &
  local vg=$!
  wait_http "http://127.0.0.1:$port/livez"
  "$bin/keepalive_client" "$n" "http://127.0.0.1:$port/fhir/bench/Patient/bench-1" "$key"
  kill -TERM "$vg"; wait "$vg" 2>/dev/null || true
  if wants p3cg; then mkdir -p "$P3_KEEP"; cp "$out" "$P3_KEEP/callgrind.gateway.$n.out"; fi
  awk '/^summary:|^totals:/ {print $2; exit}' "$out"
}
instructions_nginx() { # n → total Ir of nginx serving n requests
  local n=$1 port out conf
  port=$(free_port)
  conf=$(nginx_conf "$port" "cg$n")
  out="$work/callgrind.nginx.$n.out"
  valgrind --tool=callgrind --callgrind-out-file="$out" nginx -c "$conf" > "$work/cg-nginx$n.log" 2>&1 &
  local vg=$!
  wait_http "http://127.0.0.1:$port/fhir/Patient/bench-1"
  "$bin/keepalive_client" "$n" "http://127.0.0.1:$port/fhir/Patient/bench-1"
  kill -TERM "$vg"; wait "$vg" 2>/dev/null || true
  awk '/^summary:|^totals:/ {print $2; exit}' "$out"
}
ir1=""; ir6=""; per_request=""; ng1=""; ng6=""; ng_per_request=""
if wants p3 || wants p3cg; then
  echo "P3: callgrind, N=$N_CALLGRIND and 6N requests"
  ir1=$(instructions "$N_CALLGRIND")
  ir6=$(instructions $((6 * N_CALLGRIND)))
  per_request=$(python3 -c "print(round(($ir6 - $ir1) / (5 * $N_CALLGRIND)))")
  say "P3 gateway: Ir(N)=$ir1 Ir(6N)=$ir6 → $per_request instructions per request (N=$N_CALLGRIND)"
fi
if wants p3; then
  ng1=$(instructions_nginx "$N_CALLGRIND")
  ng6=$(instructions_nginx $((6 * N_CALLGRIND)))
  ng_per_request=$(python3 -c "print(round(($ng6 - $ng1) / (5 * $N_CALLGRIND)))")
  say "P3 nginx: Ir(N)=$ng1 Ir(6N)=$ng6 → $ng_per_request instructions per request"
fi

# Micro-benchmarks the crates carry; their own output goes into BENCHMARKS.md as printed.
micro() { # title, command...
  local title=$1; shift
  echo "$title: $*"
  local out
  # Criterion prints a long benchmark name on its own line before `time:`: keep it.
  out=$("$@" 2>&1 | grep -vE '^ *(Compiling|Finished|Running|Benchmarking|Found|Gnuplot)|change:|^ *(time|thrpt): +\[[−+-]' \
    | grep -E -B1 'P[0-9]|MB/s|µs|/s|time:|thrpt:|p50|p99' | grep -v '^--$' | head -60) || true
  printf '### %s\n\n`%s`\n\n```\n%s\n```\n\n' "$title" "$*" "$out" >> "$work/micro.md"
}
: > "$work/micro.md"
if wants micro && [ "${MICRO:-1}" = 1 ]; then
  export ASSENT_FHIR_EXAMPLES="${ASSENT_FHIR_EXAMPLES:-$root/../shared/data/fhir-examples}"
  micro "P6 — JWT verification (cache hit, cold RS256 and ES256)" \
    cargo test -q -p assent-auth --release --test verify -- --ignored --nocapture p6
  micro "P5 — consent state read from the embedded ledger (the decision cache's miss path)" \
    cargo bench -q -p assent-ledger --bench ledger -- --warm-up-time 1 --measurement-time 3
  micro "P5 and P9 — consent decisions from the cache and on a miss; revocation commit → first deny, one replica and across two through Redis" \
    cargo run -q --release -p assent-benches --bin consent_bench -- 20000
  micro "Federation — federated \$everything over three FAKE sites (10, 20, 30 ms): added latency over the slowest site (p50, target ≤ 2 ms) and throughput ÷ the three direct requests" \
    cargo run -q --release -p assent-benches --bin federation_bench -- 200 5 8
  micro "P7 (pure share) — receipts hashed and chained, Merkle proofs" \
    cargo bench -q -p assent-receipts --bench receipts -- --warm-up-time 1 --measurement-time 3
  micro "P10 — version translation on the official examples" \
    cargo bench -q -p assent-adapters --bench p10
  if [ -n "$ONLY" ]; then cat "$work/micro.md"; fi
fi

if [ -n "$ONLY" ]; then
  if wants fabric; then fabric_section; fi
  printf '\n%s' "$summary"
  exit 0
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
cat > "$OUT" <<EOF
# Benchmarks

Written by \`bash benches/run.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $cpu).
Targets and method: ../shared/PERFORMANCE.md. Ratios are measured against a reference in the
same run; absolute figures drift with the machine's load.

## P1 — plain proxying throughput (target ≥ 0.60 with everything on)

Gateway: \`assent serve --workers 1\`, a JWT from a trusted issuer (verified once, then from
the verified-token cache), consent decided on the embedded ledger (an opt-out site, the patient
with no consent: the decision cache answers), request log on, SQLite. Upstream: \`trivial-upstream\` (actix-web, one worker) answering a
~1 KB Patient. Load: \`wrk -t1 -cN -d${SECONDS_EACH}s\`, rotating direct, nginx and the
gateway; all processes share the machine's cores.

Reference proxy: nginx ($(nginx -v 2>&1 | sed 's/^nginx version: //')), one worker
(\`master_process off\`), \`proxy_pass\` to the same upstream with an upstream keepalive pool
of 1024 connections (larger than the load's), no authentication, access log off.

$p1_md
Durable receipts on (the receipt log, \`fdatasync\`ed group commit; SQLite tables filled off
the request path).

## P7 — receipts (target ≥ 100k/s durably recorded on one core; receipts cost ≤ 5 %)

End to end: the same gateway and load, built with and without receipts (the benchmark-only
feature \`bench-no-receipts\`), alternating.

| pair | receipts off req/s | receipts on req/s | on ÷ off |
|---|---|---|---|
$p7_rows
**Median on ÷ off: $p7_median.**

The receipt writer alone (\`receipts_bench STORE $RECEIPTS_SECONDS 512\`: 512 requests waiting on their
receipt at once, each released only after its group's synced commit):

\`\`\`
$(printf '%s\n' "$p7_writer" | grep '^P7')
\`\`\`

## P8 — anchoring (target: batch window + one block)

\`receipts_bench\` again: a receipt every 20 ms, from its commit to its batch's root committed
on the embedded ledger, default batch window.

\`\`\`
$(printf '%s\n' "$p7_writer" | grep '^P8')
\`\`\`

## P10e — a read translated R4 → R5 through the gateway

The P1 gateway and upstream, the same ~1 KB Patient read with
\`Accept: application/fhir+json; fhirVersion=5.0\` (buffered, parsed, translated by
\`assent-adapters\`, serialised) and without (the site's R4, untranslated), alternating.

| pair | R4 req/s | R5 req/s | ratio |
|---|---|---|---|
$t_rows
**Median ratio: $t_median.**

## P3 — user-space instructions per proxied request (target ≤ 60k, stretch ≤ 45k)

\`valgrind --tool=callgrind\` over the gateway process serving N=$N_CALLGRIND and 6N
sequential reads on one keep-alive connection (\`keepalive-client\`); the difference removes
start-up and shutdown.

| process | Ir(N) | Ir(6N) | (Ir(6N) − Ir(N)) / 5N |
|---|---|---|---|
| gateway (everything on) | $ir1 | $ir6 | **$per_request** |
| nginx (\`proxy_pass\`, no auth) | $ng1 | $ng6 | **$ng_per_request** |

Under valgrind the CPU's SHA extensions are not offered (valgrind does not emulate them), so
\`sha2\` takes its software path there: callgrind counts SHA-256 in software, while the native
runs above use the SHA-NI instructions where the CPU has them.

## Memory (targets: idle ≤ 30 MB, under the c=$CONNECTIONS_HIGH load ≤ 100 MB)

A fresh gateway as in P1 (\`assent serve --workers 1\`, SQLite), read from
\`/proc/PID/status\`.

$mem_md
## Added latency (targets: p50 ≤ one fsync + 100 µs, p99 ≤ 3 fsyncs)

$lat_md
EOF
{
  printf '\n## Micro-benchmarks\n\n'
  printf 'Figures as each benchmark printed them (criterion or a plain timing loop, release\n'
  printf 'profile), in the same run.\n\n'
  cat "$work/micro.md"
  if [ "${BENCH_QUICK:-0}" = 1 ]; then
    printf '## Fabric backend\n\nNot measured in a quick run.\n'
  else
    fabric_section
  fi
} >> "$OUT"
echo "wrote $OUT"
