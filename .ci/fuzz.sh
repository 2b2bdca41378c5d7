#!/usr/bin/env bash
# Fuzzing: builds every cargo-fuzz target in fuzz/ with nightly, runs each for FUZZ_SECONDS
# (default 60), runs the verifier again with ztgate's second RS256 backend (jwt_simple), compares
# the two backends' verdicts over the corpus, prints the executions per target, and fails if any
# target crashed (the input is kept under fuzz/artifacts/<target>/) or the backends disagreed.
# Run from anywhere: `bash .ci/fuzz.sh`.
#
#   FUZZ_SECONDS=600 bash .ci/fuzz.sh                  # longer runs
#   FUZZ_TARGETS="access_jwt jwks_parse" bash .ci/fuzz.sh
#   FUZZ_JWT_SIMPLE_TARGETS="access_jwt jwks_parse" bash .ci/fuzz.sh  # also run these with jwt_simple
#   FUZZ_JWT_SIMPLE_TARGETS= bash .ci/fuzz.sh          # no jwt_simple runs, no backend comparison
#   FUZZ_FEATURES=jwt_simple bash .ci/fuzz.sh          # everything with the jwt-simple backend
#   FUZZ_SANITIZER=none bash .ci/fuzz.sh               # no ASan (faster; see docs/hardening.md)
#   FUZZ_JOBS=1 bash .ci/fuzz.sh                       # one target at a time (default: one per core)
#
# The time: FUZZ_TARGETS plus FUZZ_JWT_SIMPLE_TARGETS runs of FUZZ_SECONDS each, FUZZ_JOBS at a
# time (CI: 8 + 1 runs of 60 s, 2 at a time, so 5 rounds). The jwt_simple build runs in the
# background while the first targets fuzz, and every run starts its binary directly (a copy
# taken after each build), so the two builds never wait for each other or rebuild what the
# other replaced.
#
# Needs the nightly toolchain (installed on the project's machines; this script cannot download
# one) and installs cargo-fuzz from crates.io when it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TERM_COLOR=never

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_TARGETS="${FUZZ_TARGETS:-access_jwt differential_jwt request_facts jwks_parse hmac_token webhook_headers client_cert envelope}"
FUZZ_JWT_SIMPLE_TARGETS="${FUZZ_JWT_SIMPLE_TARGETS-access_jwt}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-address}"
FUZZ_FEATURES="${FUZZ_FEATURES:-}"
CARGO_FUZZ_VERSION="0.13.2"
# The target that compares the two backends (fuzz/fuzz_targets/verifier_backends.rs), and the
# corpora whose inputs it replays (the access_jwt input convention).
COMPARE=verifier_backends
COMPARE_CORPORA="fuzz/corpus/access_jwt fuzz/regressions/access_jwt fuzz/corpus/differential_jwt fuzz/corpus/${COMPARE}"

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
# A build that already has jwt_simple has no second backend to run or compare.
if [[ ",${FUZZ_FEATURES// /,}," == *,jwt_simple,* ]]; then
    FUZZ_JWT_SIMPLE_TARGETS=""
fi
read -r -a targets <<<"${FUZZ_TARGETS}"
read -r -a jwt_simple_targets <<<"${FUZZ_JWT_SIMPLE_TARGETS}"

# Where cargo puts the binaries (CARGO_TARGET_DIR is honoured), and where this run keeps its
# copies of them.
target_dir="$(cd fuzz && cargo +nightly metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
built="${target_dir}/${triple}/release"
bins="${target_dir}/ztgate-fuzz-bins"
rm -rf "${bins}"
mkdir -p "${bins}/default" "${bins}/jwt_simple"
# ASan options as cargo-fuzz sets them when it starts a target itself.
if [[ "${FUZZ_SANITIZER}" == "address" ]]; then
    export ASAN_OPTIONS="${ASAN_OPTIONS:+${ASAN_OPTIONS}:}detect_odr_violation=0"
fi

step "build all targets (sanitizer: ${FUZZ_SANITIZER}${FUZZ_FEATURES:+, features: ${FUZZ_FEATURES}})"
cargo +nightly fuzz build "${build_args[@]}"
for t in "${targets[@]}" "${COMPARE}"; do
    cp "${built}/${t}" "${bins}/default/${t}"
done

# The jwt_simple build, in the background while the default targets run (it replaces the
# binaries cargo keeps, not the copies the runs use).
jwt_simple_build_pid=""
jwt_simple_build_log="fuzz/artifacts/jwt_simple-build.log"
mkdir -p fuzz/artifacts
if (( ${#jwt_simple_targets[@]} > 0 )); then
    step "build ${jwt_simple_targets[*]} ${COMPARE} with jwt_simple (background, log: ${jwt_simple_build_log})"
    (
        set -e
        for t in "${jwt_simple_targets[@]}" "${COMPARE}"; do
            cargo +nightly fuzz build "${build_args[@]}" --features jwt_simple "${t}"
            cp "${built}/${t}" "${bins}/jwt_simple/${t}"
        done
    ) >"${jwt_simple_build_log}" 2>&1 &
    jwt_simple_build_pid=$!
fi

# Seeds are generated (they hold signed sample tokens and JWKS moduli, so they are not
# committed): each target's init hook writes its own when ZTGATE_FUZZ_SEEDS is set.
seeded=("${targets[@]}")
(( ${#jwt_simple_targets[@]} > 0 )) && seeded+=("${COMPARE}")
for t in "${seeded[@]}"; do
    if ! compgen -G "fuzz/corpus/${t}/seed-*" >/dev/null; then
        ZTGATE_FUZZ_SEEDS="${root}/fuzz/corpus/${t}" "${bins}/default/${t}" -runs=0
    fi
done

# One run: a binary of one build on its target's corpus; writes its status next to its log.
# `name` labels the run and its artifacts directory (fuzz/artifacts/<name>/).
run_target() {
    local build="$1" t="$2" name="$3"
    local log="fuzz/artifacts/${name}/last-run.log"
    mkdir -p "fuzz/corpus/${t}" "fuzz/artifacts/${name}" "fuzz/regressions/${t}"
    # fuzz/regressions/<target>/ holds the committed inputs of past findings: libFuzzer runs
    # every input of both directories before it starts mutating (new units go to the first).
    set +e
    "${bins}/${build}/${t}" -artifact_prefix="${root}/fuzz/artifacts/${name}/" \
        "${root}/fuzz/corpus/${t}" "${root}/fuzz/regressions/${t}" \
        -max_total_time="${FUZZ_SECONDS}" -timeout=20 -print_final_stats=1 \
        -dict="${root}/fuzz/dict/jwt.dict" >"${log}" 2>&1
    echo $? >"fuzz/artifacts/${name}/last-run.status"
}

# The runs: every target with the default build, then the jwt_simple ones (they wait for their
# build). Entries are "build target name".
runs=()
for t in "${targets[@]}"; do
    runs+=("default ${t} ${t}")
done
for t in "${jwt_simple_targets[@]}"; do
    runs+=("jwt_simple ${t} ${t}.jwt_simple")
done

jwt_simple_build_failed=0
wait_for_jwt_simple_build() {
    [[ -n "${jwt_simple_build_pid}" ]] || return 0
    if ! wait "${jwt_simple_build_pid}"; then
        jwt_simple_build_failed=1
        echo "fuzz: the jwt_simple build FAILED; last lines of ${jwt_simple_build_log}:" >&2
        tail -n 30 "${jwt_simple_build_log}" >&2
    fi
    jwt_simple_build_pid=""
}

# A status file appears when its run is over (the comparison waits for some).
for run in "${runs[@]}"; do
    read -r build t name <<<"${run}"
    rm -f "fuzz/artifacts/${name}/last-run.status"
done

# libFuzzer is single-threaded: run FUZZ_JOBS at a time (default: one per core).
jobs_max="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
step "run ${#runs[@]} targets for ${FUZZ_SECONDS}s each, ${jobs_max} at a time"
running=()
for run in "${runs[@]}"; do
    read -r build t name <<<"${run}"
    while (( ${#running[@]} >= jobs_max )); do
        wait -n "${running[@]}" || true
        alive=()
        for pid in "${running[@]}"; do
            kill -0 "${pid}" 2>/dev/null && alive+=("${pid}")
        done
        running=("${alive[@]}")
    done
    if [[ "${build}" == "jwt_simple" ]]; then
        wait_for_jwt_simple_build
        if (( jwt_simple_build_failed )); then
            mkdir -p "fuzz/artifacts/${name}"
            echo "the jwt_simple build failed (${jwt_simple_build_log})" >"fuzz/artifacts/${name}/last-run.log"
            echo 1 >"fuzz/artifacts/${name}/last-run.status"
            continue
        fi
    fi
    echo "  start ${name}"
    run_target "${build}" "${t}" "${name}" &
    running+=($!)
done
# The backends compared: the default build records its verdicts on every token of the corpora,
# the jwt_simple build re-verifies them and must agree (fuzz/fuzz_targets/verifier_backends.rs).
# It starts once the default runs whose corpora it replays are over, beside the last runs.
compare_dir="fuzz/artifacts/${COMPARE}"
compare_log="${compare_dir}/compare.log"
compare_backends() {
    local verdicts="${compare_dir}/verdicts.txt" corpora=() c status
    for c in ${COMPARE_CORPORA}; do
        [[ -d "${c}" ]] && corpora+=("${root}/${c}")
    done
    set +e
    ZTGATE_VERDICTS_RECORD="${root}/${verdicts}" "${bins}/default/${COMPARE}" -runs=0 \
        -artifact_prefix="${root}/${compare_dir}/" "${corpora[@]}" >"${compare_log}" 2>&1
    status=$?
    if (( status == 0 )); then
        ZTGATE_VERDICTS_CHECK="${root}/${verdicts}" "${bins}/jwt_simple/${COMPARE}" >>"${compare_log}" 2>&1
        status=$?
    fi
    echo "${status}" >"${compare_dir}/compare.status"
}
if (( ${#jwt_simple_targets[@]} > 0 )); then
    mkdir -p "${compare_dir}"
    rm -f "${compare_dir}/compare.status"
    wait_for_jwt_simple_build
    if (( jwt_simple_build_failed )); then
        echo "the jwt_simple build failed (${jwt_simple_build_log})" >"${compare_log}"
        echo 1 >"${compare_dir}/compare.status"
    else
        for t in access_jwt differential_jwt; do
            if [[ " ${targets[*]} " == *" ${t} "* ]]; then
                while [[ ! -e "fuzz/artifacts/${t}/last-run.status" ]]; do sleep 1; done
            fi
        done
        echo "  start backend comparison"
        compare_backends &
    fi
fi
wait || true

compare_status=0
compare_summary=""
if (( ${#jwt_simple_targets[@]} > 0 )); then
    compare_status="$(cat "${compare_dir}/compare.status" 2>/dev/null || echo 1)"
    compare_summary="$(grep -E '^verifier_backends: [0-9]+ tokens compared' "${compare_log}" || true)"
    step "RS256 backends compared (jsonwebtoken, jwt_simple) over the verifier corpora"
    grep -E '^(verifier_backends|    documented difference)' "${compare_log}" || true
    if (( compare_status != 0 )); then
        echo "fuzz: the backend comparison FAILED (exit ${compare_status}); last lines of ${compare_log}:" >&2
        tail -n 40 "${compare_log}" >&2
    fi
fi

declare -A execs=()
failed=()
for run in "${runs[@]}"; do
    read -r build t name <<<"${run}"
    log="fuzz/artifacts/${name}/last-run.log"
    status="$(cat "fuzz/artifacts/${name}/last-run.status" 2>/dev/null || echo 1)"
    # libFuzzer's closing statistics: "stat::number_of_executed_units: N", or "Done N runs".
    n="$(grep -oE 'stat::number_of_executed_units: [0-9]+' "${log}" | tail -n1 | grep -oE '[0-9]+$' || true)"
    [[ -n "${n}" ]] || n="$(grep -oE 'Done [0-9]+ runs' "${log}" | tail -n1 | grep -oE '[0-9]+' || true)"
    [[ -n "${n}" ]] || n="$(grep -oE '^#[0-9]+' "${log}" | tail -n1 | tr -d '#' || true)"
    execs[${name}]="${n:-?}"
    if (( status != 0 )); then
        failed+=("${name}")
        features="${FUZZ_FEATURES}"
        [[ "${build}" == "jwt_simple" ]] && features="jwt_simple"
        echo "fuzz: ${name} FAILED (exit ${status}); last lines of ${log}:" >&2
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|artifact' "${log}" | head -n 20 >&2 || true
        tail -n 30 "${log}" >&2
        echo "  reproduce: cargo +nightly fuzz run${features:+ --features ${features}} ${t} fuzz/artifacts/${name}/<file>" >&2
    fi
done
(( compare_status != 0 )) && failed+=("${COMPARE} (backend comparison)")

step "executions per target (${FUZZ_SECONDS}s each)"
for run in "${runs[@]}"; do
    read -r build t name <<<"${run}"
    printf '  %-24s %12s executions\n' "${name}" "${execs[${name}]}"
done
[[ -n "${compare_summary}" ]] && echo "  ${compare_summary}"
if (( ${#failed[@]} > 0 )); then
    echo "fuzz: FAILED: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: OK (${#runs[@]} runs$( (( ${#jwt_simple_targets[@]} > 0 )) && echo ", backends compared"), $(( $(date +%s) - started ))s)"
