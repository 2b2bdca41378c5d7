#!/usr/bin/env bash
# Load test of the admin server example (examples/admin_server) with wrk, on 127.0.0.1 only.
#
#   scripts/loadtest.sh [-d 10s] [-t 1] [-c 16] [-n 3000] [--pin|--no-pin] [--log warn]
#                       [--json FILE] [--no-build]
#
# Three phases, each for the same duration against the same server process:
#   healthz        GET /healthz (public: the floor of routing, the gate and the HTTP stack)
#   whoami-1       GET /admin/whoami, one token repeated (Cf-Access-Jwt-Assertion)
#   whoami-<n>     GET /admin/whoami, n distinct tokens round-robin
# and prints req/s, p50, p99 and the server's RSS (now and peak) after each, then the ratios
# of the two whoami phases to healthz. Read the figures as ratios from one run on one machine.
#
# Needs: cargo, curl, python3 (serves the JWKS), wrk (installed with apt-get when missing and
# possible; exit 2 otherwise). Exit status: 0 done, 1 a check or phase failed, 2 setup.
# Run it niced on a shared machine (`nice -n 19 scripts/loadtest.sh`): every process it starts
# inherits that, so the ratios are unaffected. CARGO_TARGET_DIR is honoured.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

duration=10s threads=1 connections=16 ntokens=3000 pin=auto log=warn json="" build=1
while [ $# -gt 0 ]; do
  case "$1" in
    -d | --duration) duration=${2:?}; shift ;;
    -t | --threads) threads=${2:?}; shift ;;
    -c | --connections) connections=${2:?}; shift ;;
    -n | --tokens) ntokens=${2:?}; shift ;;
    --pin) pin=yes ;;
    --no-pin) pin=no ;;
    --log) log=${2:?}; shift ;;
    --json) json=${2:?}; shift ;;
    --no-build) build=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "loadtest: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ $duration =~ ^[0-9]+[smh]?$ ]] || { echo "loadtest: -d $duration is not a duration such as 10s" >&2; exit 2; }
for v in threads connections ntokens; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "loadtest: $v must be a positive whole number" >&2; exit 2; }
done
[ "$connections" -ge "$threads" ] || { echo "loadtest: -c must be at least -t" >&2; exit 2; }

die() { echo "loadtest: $*" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
lua="$root/scripts/loadtest/phase.lua"

for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "loadtest: $tool is required" >&2; exit 2; }
done
if ! command -v wrk >/dev/null; then
  echo "loadtest: wrk is missing; trying apt-get install -y wrk" >&2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y wrk >&2 || { apt-get update >&2 && apt-get install -y wrk >&2; } || true
  fi
  command -v wrk >/dev/null || {
    echo "loadtest: wrk could not be installed (apt-get install wrk as root, or build it from" \
      "https://github.com/wg/wrk); nothing was measured" >&2
    exit 2
  }
fi

# Pinning: the server on CPU 0, wrk on CPU 1, so they do not take each other's core.
server_cpu=() wrk_cpu=()
if [ "$pin" != no ]; then
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    server_cpu=(taskset -c 0) wrk_cpu=(taskset -c 1)
  elif [ "$pin" = yes ]; then
    echo "loadtest: --pin needs taskset and two CPUs" >&2; exit 2
  fi
fi

if [ "$build" = 1 ]; then
  (cd "$root" && cargo build --release --example admin_server --example loadtest_tokens) ||
    { echo "loadtest: build failed" >&2; exit 2; }
fi
server_bin="$target/release/examples/admin_server"
tokens_bin="$target/release/examples/loadtest_tokens"
[ -x "$server_bin" ] && [ -x "$tokens_bin" ] || { echo "loadtest: $server_bin or $tokens_bin missing" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ztgate-loadtest.XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until FILE has a line matching REGEX (printed), for at most 30 s, while PID lives.
wait_line() {
  local file=$1 regex=$2 pid=$3 line
  for _ in $(seq 300); do
    line=$(grep -m1 -E "$regex" "$file" 2>/dev/null || true)
    [ -n "$line" ] && { echo "$line"; return 0; }
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

iss=https://ztgate-loadtest.invalid # never contacted: the keys come from ZTGATE_CERTS_URL
aud=ztgate-loadtest
email=loadtest@example.com

echo "== minting $ntokens tokens"
"$tokens_bin" --out "$work/tokens" --count "$ntokens" --iss "$iss" --aud "$aud" --email "$email"
# Only the JWKS is served; the tokens stay out of the served directory.
mkdir "$work/www"
mv "$work/tokens/certs.json" "$work/www/certs.json"
tokens="$work/tokens/tokens.txt"

python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$work/www" >"$work/jwks.log" 2>&1 &
pids+=($!)
jwks_port=$(wait_line "$work/jwks.log" 'port [0-9]+' "${pids[-1]}" | sed -E 's/.*port ([0-9]+).*/\1/') ||
  die "the JWKS server did not start: $(cat "$work/jwks.log")"
certs_url="http://127.0.0.1:$jwks_port/certs.json"

# The server sees only the variables set here (none of the caller's ZTGATE_*).
env_vars=(
  PATH="$PATH" RUST_LOG="$log"
  ZTGATE_LISTEN=127.0.0.1:0 ZTGATE_DB="$work/admin.sqlite"
  ZTGATE_TEAM_DOMAIN="$iss" ZTGATE_CERTS_URL="$certs_url" ZTGATE_AUD="$aud" ZTGATE_ADMIN_EMAILS="$email"
)
env -i "${env_vars[@]}" "${server_cpu[@]}" "$server_bin" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
pids+=("$server_pid")
origin=$(wait_line "$work/server.out" '^listening on http://127\.0\.0\.1:[0-9]+$' "$server_pid" | sed 's/^listening on //') ||
  die "the admin server did not start; its log:
$(tail -n 20 "$work/server.log")"
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$origin/healthz")" = 200 ] && break
  sleep 0.1
done

# One request per phase must be 200 first: a load test of refusals measures nothing.
check() {
  local name=$1 code token=${2:-}
  if [ -n "$token" ]; then
    # The header goes through a file so no token appears in a process list.
    printf 'Cf-Access-Jwt-Assertion: %s\n' "$token" >"$work/header"
    code=$(curl -s -o "$work/body" -w '%{http_code}' -H @"$work/header" "$origin/admin/whoami")
  else
    code=$(curl -s -o "$work/body" -w '%{http_code}' "$origin/healthz")
  fi
  [ "$code" = 200 ] || die "$name: expected 200, got $code: $(head -c 300 "$work/body")"
}
check healthz
check whoami-1 "$(head -n1 "$tokens")"
check "whoami-$ntokens (first token)" "$(head -n1 "$tokens")"
check "whoami-$ntokens (last token)" "$(tail -n1 "$tokens")"
[ "$(grep -c . "$tokens")" = "$ntokens" ] || die "tokens.txt does not hold $ntokens tokens"

vm_kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$server_pid/status"; }

names=() rps=() p50=() p99=() rss=() hwm=()
run_phase() {
  local name=$1 path=$2 mode=$3 out line
  echo "== $name: wrk -t$threads -c$connections -d$duration $path"
  out=$("${wrk_cpu[@]}" wrk -t"$threads" -c"$connections" -d"$duration" -s "$lua" "$origin$path" \
    -- "$mode" "$tokens" "$threads") || die "$name: wrk failed: $out"
  line=$(grep '^loadtest-result ' <<<"$out") || die "$name: no result line from wrk: $out"
  kill -0 "$server_pid" 2>/dev/null || die "$name: the server died; its log: $(tail -n 20 "$work/server.log")"
  local -A r
  local kv
  for kv in ${line#loadtest-result }; do r[${kv%%=*}]=${kv#*=}; done
  echo "   ${line#loadtest-result }"
  [ "${r[status_errors]}" = 0 ] || die "$name: ${r[status_errors]} responses were 4xx/5xx"
  [ "$((r[connect_errors] + r[timeouts]))" = 0 ] ||
    die "$name: ${r[connect_errors]} connect errors, ${r[timeouts]} timeouts"
  [ "${r[requests]}" -gt 0 ] || die "$name: no request completed"
  names+=("$name") rps+=("${r[rps]}") p50+=("${r[p50_us]}") p99+=("${r[p99_us]}")
  rss+=("$(vm_kib VmRSS)") hwm+=("$(vm_kib VmHWM)")
}
run_phase healthz /healthz none
run_phase whoami-1 /admin/whoami one
run_phase "whoami-$ntokens" /admin/whoami all

ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t ? "meets" : "below") }'; }

echo
echo "wrk -t$threads -c$connections -d$duration, pinned: $([ ${#server_cpu[@]} -gt 0 ] && echo "server CPU 0, wrk CPU 1" || echo no), RUST_LOG=$log"
printf '%-14s %10s %9s %9s %9s %10s\n' phase 'req/s' 'p50 ms' 'p99 ms' 'RSS MiB' 'peak MiB'
for i in "${!names[@]}"; do
  printf '%-14s %10.0f %9s %9s %9s %10s\n' "${names[$i]}" "${rps[$i]}" "$(ms "${p50[$i]}")" \
    "$(ms "${p99[$i]}")" "$(mib "${rss[$i]}")" "$(mib "${hwm[$i]}")"
done
r1=$(ratio "${rps[1]}" "${rps[0]}")
rn=$(ratio "${rps[2]}" "${rps[0]}")
echo
printf '%-26s %6s   target >= 0.8 (%s)\n' "whoami-1 / healthz" "$r1" "$(verdict "$r1" 0.8)"
printf '%-26s %6s   target >= 0.6 (%s)\n' "whoami-$ntokens / healthz" "$rn" "$(verdict "$rn" 0.6)"

if [ -n "$json" ]; then
  {
    printf '{\n  "wrk": {"threads": %s, "connections": %s, "duration": "%s"},\n' "$threads" "$connections" "$duration"
    printf '  "pinned": %s, "rust_log": "%s", "tokens": %s,\n' \
      "$([ ${#server_cpu[@]} -gt 0 ] && echo true || echo false)" "$log" "$ntokens"
    printf '  "phases": [\n'
    for i in "${!names[@]}"; do
      printf '    {"phase": "%s", "rps": %s, "p50_us": %s, "p99_us": %s, "rss_kib": %s, "peak_rss_kib": %s}%s\n' \
        "${names[$i]}" "${rps[$i]}" "${p50[$i]}" "${p99[$i]}" "${rss[$i]}" "${hwm[$i]}" \
        "$([ "$i" -lt $((${#names[@]} - 1)) ] && echo ,)"
    done
    printf '  ],\n  "ratios": {"whoami_1_over_healthz": %s, "whoami_n_over_healthz": %s},\n' "$r1" "$rn"
    printf '  "targets": {"whoami_1_over_healthz": 0.8, "whoami_n_over_healthz": 0.6}\n}\n'
  } >"$json"
  echo "figures written to $json"
fi
