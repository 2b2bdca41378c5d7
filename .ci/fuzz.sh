#!/usr/bin/env bash
# Fuzzing: builds every cargo-fuzz target in fuzz/ with nightly, runs each for FUZZ_SECONDS
# (default 60), prints the executions per target, and fails if any target crashed (the input is
# kept under fuzz/artifacts/<target>/). Run from anywhere: `bash .ci/fuzz.sh`.
#
#   FUZZ_SECONDS=600 bash .ci/fuzz.sh                  # longer runs
#   FUZZ_TARGETS="access_jwt jwks_parse" bash .ci/fuzz.sh
#   FUZZ_FEATURES=jwt_simple bash .ci/fuzz.sh          # the verifier with the jwt-simple backend
#   FUZZ_SANITIZER=none bash .ci/fuzz.sh               # no ASan (faster; see docs/hardening.md)
#   FUZZ_JOBS=1 bash .ci/fuzz.sh                       # one target at a time (default: one per core)
#
# Needs the nightly toolchain (installed on the project's machines; this script cannot download
# one) and installs cargo-fuzz from crates.io when it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TERM_COLOR=never

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_TARGETS="${FUZZ_TARGETS:-request_facts access_jwt jwks_parse differential_jwt hmac_token webhook_headers client_cert}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-address}"
FUZZ_FEATURES="${FUZZ_FEATURES:-}"
CARGO_FUZZ_VERSION="0.13.2"

started=$(date +%s)
step() { printf '\n==> [%ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }
die() { printf 'fuzz: %s\n' "$*" >&2; exit 1; }

step "toolchain"
cargo +nightly --version >/dev/null 2>&1 || die "the nightly toolchain is missing (rustup toolchain install nightly)"
cargo +nightly --version
if ! cargo fuzz --version >/dev/null 2>&1; then
    step "installing cargo-fuzz ${CARGO_FUZZ_VERSION}"
    cargo install cargo-fuzz --locked --version "${CARGO_FUZZ_VERSION}"
fi
cargo fuzz --version
# `--install`: only the tool above (CI installs it in the background ahead of time).
[[ "${1:-}" == "--install" ]] && exit 0

build_args=(--sanitizer "${FUZZ_SANITIZER}" --debug-assertions)
if [[ -n "${FUZZ_FEATURES}" ]]; then
    build_args+=(--features "${FUZZ_FEATURES}")
fi

step "build all targets (sanitizer: ${FUZZ_SANITIZER}${FUZZ_FEATURES:+, features: ${FUZZ_FEATURES}})"
cargo +nightly fuzz build "${build_args[@]}"

# Seeds are generated (they hold signed sample tokens and JWKS moduli, so they are not
# committed): each target's init hook writes its own when ZTGATE_FUZZ_SEEDS is set.
read -r -a targets <<<"${FUZZ_TARGETS}"
for t in "${targets[@]}"; do
    if ! compgen -G "fuzz/corpus/${t}/seed-*" >/dev/null; then
        ZTGATE_FUZZ_SEEDS="${root}/fuzz/corpus/${t}" cargo +nightly fuzz run "${build_args[@]}" "${t}" -- -runs=0
    fi
done

# One target: runs it, writes its status next to its log.
run_target() {
    local t="$1" log="fuzz/artifacts/$1/last-run.log"
    mkdir -p "fuzz/corpus/${t}" "fuzz/artifacts/${t}" "fuzz/regressions/${t}"
    # fuzz/regressions/<target>/ holds the committed inputs of past findings: libFuzzer runs
    # every input of both directories before it starts mutating (new units go to the first).
    set +e
    cargo +nightly fuzz run "${build_args[@]}" "${t}" "${root}/fuzz/corpus/${t}" \
        "${root}/fuzz/regressions/${t}" -- \
        -max_total_time="${FUZZ_SECONDS}" -timeout=20 -print_final_stats=1 \
        -dict="${root}/fuzz/dict/jwt.dict" >"${log}" 2>&1
    echo $? >"fuzz/artifacts/${t}/last-run.status"
}

# libFuzzer is single-threaded: run FUZZ_JOBS targets at a time (default: one per core).
jobs_max="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
step "run ${#targets[@]} targets for ${FUZZ_SECONDS}s each, ${jobs_max} at a time"
running=0
for t in "${targets[@]}"; do
    if (( running >= jobs_max )); then
        wait -n || true
        running=$(( running - 1 ))
    fi
    echo "  start ${t}"
    run_target "${t}" &
    running=$(( running + 1 ))
done
wait || true

declare -A execs=()
failed=()
for t in "${targets[@]}"; do
    log="fuzz/artifacts/${t}/last-run.log"
    status="$(cat "fuzz/artifacts/${t}/last-run.status" 2>/dev/null || echo 1)"
    # libFuzzer's closing statistics: "stat::number_of_executed_units: N", or "Done N runs".
    n="$(grep -oE 'stat::number_of_executed_units: [0-9]+' "${log}" | tail -n1 | grep -oE '[0-9]+$' || true)"
    [[ -n "${n}" ]] || n="$(grep -oE 'Done [0-9]+ runs' "${log}" | tail -n1 | grep -oE '[0-9]+' || true)"
    [[ -n "${n}" ]] || n="$(grep -oE '^#[0-9]+' "${log}" | tail -n1 | tr -d '#' || true)"
    execs[${t}]="${n:-?}"
    if (( status != 0 )); then
        failed+=("${t}")
        echo "fuzz: ${t} FAILED (exit ${status}); last lines of ${log}:" >&2
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|artifact' "${log}" | head -n 20 >&2 || true
        tail -n 30 "${log}" >&2
    fi
done

step "executions per target (${FUZZ_SECONDS}s each)"
for t in "${targets[@]}"; do
    printf '  %-18s %12s executions\n' "${t}" "${execs[${t}]}"
done
if (( ${#failed[@]} > 0 )); then
    echo "fuzz: FAILED: ${failed[*]} (inputs under fuzz/artifacts/; reproduce with" >&2
    echo "  cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>)" >&2
    exit 1
fi
echo "fuzz: OK (${#targets[@]} targets, $(( $(date +%s) - started ))s)"
