#!/usr/bin/env bash
# Proves that the repository stands alone: clones the committed HEAD into a fresh temporary
# directory with nothing beside it (in particular no ../shared) and runs the README's test
# command there. Exits non-zero when the tests fail. Run from anywhere:
# `bash .ci/standalone.sh`.
# - Only what is committed is tested (uncommitted changes are not in the clone: commit first).
# - CARGO_TARGET_DIR, if set, is reused: dependencies are not rebuilt. ztgate's own artifacts are
#   removed from it before and after the run (`cargo clean -p ztgate`): cargo names them
#   independently of where the package lives, so the clone's test binaries (which read their data
#   through the clone's CARGO_MANIFEST_DIR, deleted afterwards) would otherwise look up to date to
#   the next build of the repository itself, and the other way round. Without CARGO_TARGET_DIR the
#   build goes to the clone's own target/, deleted with it.
set -euo pipefail

die() { printf 'standalone: %s\n' "$*" >&2; exit 1; }

# A relative CARGO_TARGET_DIR means relative to where the script was started.
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    CARGO_TARGET_DIR="$(realpath -m -- "${CARGO_TARGET_DIR}")"
    export CARGO_TARGET_DIR
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$(date +%s)

head="$(git rev-parse --verify HEAD)"
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
    echo "standalone: note: uncommitted changes are not part of this run (it tests ${head})" >&2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ztgate-standalone.XXXXXX")"
clone="${work}/ztgate"
clean_shared_target() {
    if [[ -n "${CARGO_TARGET_DIR:-}" && -f "${clone}/Cargo.toml" ]]; then
        (cd "${clone}" && cargo clean --quiet --locked -p ztgate)
    fi
}
cleanup() {
    local status=$?
    clean_shared_target || { echo "standalone: cargo clean -p ztgate failed in ${CARGO_TARGET_DIR}" >&2; status=1; }
    rm -rf "${work}"
    exit "${status}"
}
trap cleanup EXIT
git clone --quiet --no-local --no-checkout -- "${PWD}" "${clone}"
git -C "${clone}" checkout --quiet --detach "${head}"
[[ "$(git -C "${clone}" rev-parse HEAD)" == "${head}" ]] || die "the clone is not at ${head}"
# Nothing beside the clone: a test reading ../shared (or anything else outside the repository)
# fails here.
[[ "$(ls -A "${work}")" == "ztgate" ]] || die "${work} holds more than the clone"

echo "standalone: ${head} in ${clone}, target dir ${CARGO_TARGET_DIR:-${clone}/target}"
clean_shared_target
cd "${clone}"
# The README's test command (as in .ci/run).
cargo test --locked
echo "standalone: OK in $(( $(date +%s) - started ))s"
