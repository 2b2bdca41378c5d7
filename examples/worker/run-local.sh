#!/usr/bin/env bash
# The ztgate Worker example in the local Workers runtime (workerd, through wrangler).
#
#   examples/worker/run-local.sh           build if needed, then serve on $ZTGATE_LISTEN
#                                          (default 127.0.0.1:8787) until stopped, keeping the
#                                          Durable Object's storage (and the Cache API) in
#                                          $ZTGATE_PERSIST_TO (default .wrangler/state)
#   examples/worker/run-local.sh --build   only build (build/index.js + build/index_bg.wasm)
#   examples/worker/run-local.sh --install only install the tools below
#
# ZTGATE_TEST_SCHEDULED=1 serves with `wrangler dev --test-scheduled`: GET /__scheduled?cron=...
# then runs the Worker's scheduled handler, as a cron trigger would. For local tests only: it
# lets any local HTTP client fire the trigger (the edge has no such route).
#
# Every ZTGATE_* variable of the environment is passed to the Worker as a var, e.g.
#
#   ZTGATE_TEAM_DOMAIN=https://acme.cloudflareaccess.com ZTGATE_AUD=<aud tag> \
#   ZTGATE_ADMIN_EMAILS=alice@acme.com examples/worker/run-local.sh
#
# On a fresh machine it installs what it needs first: the wasm32 target (rustup), wasm-bindgen-cli
# at exactly the wasm-bindgen version of Cargo.lock and worker-build (cargo install), and
# wrangler, miniflare and binaryen's wasm-opt (npm ci, versions pinned in package-lock.json).
# worker-build would download wasm-bindgen, wasm-opt and esbuild itself; they are given to it
# through WASM_BINDGEN_BIN, WASM_OPT_BIN and ESBUILD_BIN instead, so nothing is fetched at build
# time. Set ZTGATE_WASM_OPT=0 to build without wasm-opt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "${here}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:${here}/node_modules/.bin:${PATH}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

WORKER_BUILD_VERSION="0.8.7"
say() { printf 'run-local: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

build_only=0
install_only=0
case "${1:-}" in
    --build) build_only=1 ;;
    --install) install_only=1 ;;
    "") ;;
    *) die "unknown argument ${1} (use --build, --install, or nothing to build and serve)" ;;
esac

# --- tools ----------------------------------------------------------------------------------
wasm_bindgen_version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
[[ -n "${wasm_bindgen_version}" ]] || die "no wasm-bindgen in examples/worker/Cargo.lock"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    say "installing the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
fi
if [[ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen ${wasm_bindgen_version}"* ]]; then
    say "installing wasm-bindgen-cli ${wasm_bindgen_version} (must equal the library's version)"
    # --locked first; a registry mirror that lags behind the CLI's lock file needs a fresh
    # resolution (same CLI version, newest compatible dependencies).
    cargo install wasm-bindgen-cli --version "${wasm_bindgen_version}" --locked \
        || cargo install wasm-bindgen-cli --version "${wasm_bindgen_version}"
fi
if [[ "$(worker-build --version 2>/dev/null)" != *"${WORKER_BUILD_VERSION}"* ]]; then
    say "installing worker-build ${WORKER_BUILD_VERSION}"
    cargo install worker-build --version "${WORKER_BUILD_VERSION}" --locked \
        || cargo install worker-build --version "${WORKER_BUILD_VERSION}"
fi
if [[ ! -x node_modules/.bin/wrangler || package-lock.json -nt node_modules/.package-lock.json ]]; then
    say "installing wrangler, miniflare and binaryen (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
fi

(( install_only )) && exit 0

# --- build ----------------------------------------------------------------------------------
out="build/index.js"
needs_build=1
if [[ -f "${out}" ]]; then
    newer="$(find src Cargo.toml Cargo.lock ../../src ../../Cargo.toml -newer "${out}" -print -quit)"
    [[ -z "${newer}" ]] && needs_build=0
fi
if (( needs_build )); then
    say "building the Worker (worker-build --release)"
    started=$(date +%s)
    export WASM_BINDGEN_BIN="$(command -v wasm-bindgen)"
    export ESBUILD_BIN="${here}/node_modules/.bin/esbuild"
    opt=()
    if [[ "${ZTGATE_WASM_OPT:-1}" == "0" ]]; then
        opt=(--no-opt)
    else
        export WASM_OPT_BIN="${here}/node_modules/.bin/wasm-opt"
    fi
    worker-build --release "${opt[@]}"
    say "built in $(( $(date +%s) - started ))s: $(wc -c < build/index_bg.wasm 2>/dev/null || find build -name '*.wasm' -exec wc -c {} + | tail -n1) bytes of wasm"
else
    say "build is up to date"
fi
(( build_only )) && exit 0

# --- serve ----------------------------------------------------------------------------------
listen="${ZTGATE_LISTEN:-127.0.0.1:8787}"
host="${listen%:*}"
port="${listen##*:}"
[[ -n "${host}" && "${port}" =~ ^[0-9]+$ ]] || die "ZTGATE_LISTEN=${listen} is not host:port"
vars=()
while IFS='=' read -r name value; do
    [[ "${name}" == ZTGATE_LISTEN || "${name}" == ZTGATE_PERSIST_TO || "${name}" == ZTGATE_TEST_SCHEDULED ]] && continue
    vars+=(--var "${name}:${value}")
done < <(env | grep -E '^ZTGATE_[A-Z0-9_]+=' || true)

# No telemetry, no update check, no fetch of Cloudflare's cf.json: only loopback traffic.
export WRANGLER_SEND_METRICS=false NO_UPDATE_NOTIFIER=1 CLOUDFLARE_CF_FETCH_ENABLED=false
# The Worker's console.log lines (ZTGATE_LOG=info, the default, or debug: one JSON line per
# decision) only show at wrangler's `log` level; with ZTGATE_LOG=warn or error, wrangler's own
# chatter stays hidden too.
case "${ZTGATE_LOG:-info}" in
    warn | error | WARN | ERROR) log_level=warn ;;
    *) log_level=log ;;
esac
persist=()
[[ -n "${ZTGATE_PERSIST_TO:-}" ]] && persist=(--persist-to "${ZTGATE_PERSIST_TO}")
scheduled=()
[[ "${ZTGATE_TEST_SCHEDULED:-0}" == 1 ]] && scheduled=(--test-scheduled)
say "serving on http://${listen}"
exec wrangler dev --ip "${host}" --port "${port}" --show-interactive-dev-session=false \
    --log-level "${log_level}" "${persist[@]}" "${scheduled[@]}" "${vars[@]}"
