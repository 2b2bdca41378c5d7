#!/usr/bin/env bash
# Supply-chain and secrets gate: cargo-deny (advisories, licenses, bans, sources) over every
# graph ztgate ships, then a detect-secrets scan of the repository against .secrets.baseline.
# Exits non-zero on any finding. Run from anywhere: `bash .ci/supply-chain.sh`.
# Offline when ../shared/advisory-db is beside the repository (CI, project machines: only package
# registries are reachable, to install the tools); without it, cargo-deny fetches the advisory
# database itself (network needed).
set -euo pipefail

# ---- what to check ----------------------------------------------------------------------------
# One cargo-deny graph per line: "<label>|<graph options>|<extra `check` options>". To add a graph
# (another target or feature set), add a line here. `--all-features` is
# not valid: `aws_lc_rs` and `rust_crypto` are mutually exclusive.
# native: default features plus axum,dev, with dev-dependencies (they run in CI and on laptops;
#         licenses are still checked on shipped dependencies only, see deny.toml).
# wasm32: what a Workers build ships (feature `workers`); dev-dependencies excluded (they only build natively, and the
#         `ztgate = { path = "." }` dev-dependency would pull the native defaults into this graph).
#         The duplicate skips in deny.toml are written for the native graph, hence
#         `--allow unnecessary-skip` here.
DENY_GRAPHS=(
    "native|--features axum,dev,config,redis,workload|"
    "wasm32|--target wasm32-unknown-unknown --no-default-features --features workers --exclude-dev|--allow unnecessary-skip"
)
CARGO_DENY_VERSION="0.20.2"    # known to work with the offline advisory-db layout below
DETECT_SECRETS_VERSION="1.5.0" # the version that wrote .secrets.baseline
# Optional: a RustSec snapshot beside the repository. When it is missing (a clone on its own),
# cargo-deny fetches the database itself, see "advisory database" below.
ADVISORY_DB_SNAPSHOT="../shared/advisory-db"
# cargo-deny looks for the db at <db-path>/<last URL segment>-<xxhash64 of the URL in deny.toml>.
ADVISORY_DB_DIRNAME="advisory-db-3157b0e258782691"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'supply-chain: %s\n' "$*" >&2; exit 1; }

# ---- tools ------------------------------------------------------------------------------------
if ! cargo deny --version >/dev/null 2>&1; then
    step "installing cargo-deny ${CARGO_DENY_VERSION}"
    cargo install cargo-deny --locked --version "${CARGO_DENY_VERSION}"
fi
# detect-secrets runs as `python3 -m ...` (no reliance on console scripts being on PATH, e.g.
# pyenv shims). The pinned version wrote .secrets.baseline; another version may rewrite it.
if [[ "$(python3 -c 'from detect_secrets.__version__ import VERSION; print(VERSION)' 2>/dev/null || true)" != "${DETECT_SECRETS_VERSION}" ]]; then
    step "installing detect-secrets ${DETECT_SECRETS_VERSION}"
    python3 -m pip install --quiet --disable-pip-version-check "detect-secrets==${DETECT_SECRETS_VERSION}"
fi
echo "$(cargo deny --version), detect-secrets $(python3 -m detect_secrets --version)"
# `--install`: only the tools above (CI installs them in the background ahead of time).
[[ "${1:-}" == "--install" ]] && exit 0

# ---- advisory database ------------------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/ztgate-supply-chain.XXXXXX")"
trap 'rm -rf "${work}"' EXIT
# Options for every `cargo deny` call below.
deny_opts=(--locked)
if [[ -d "${ADVISORY_DB_SNAPSHOT}/crates" ]]; then
    # An offline copy of the snapshot: cargo-deny runs with --offline and never fetches.
    snapshot_date="$(grep -oE '[0-9]{4}-[0-9]{2}-[0-9]{2}' "${ADVISORY_DB_SNAPSHOT}/SNAPSHOT.md" | head -n1 || true)"
    [[ -n "${snapshot_date}" ]] || die "cannot read the snapshot date from ${ADVISORY_DB_SNAPSHOT}/SNAPSHOT.md"
    export ZTGATE_ADVISORY_DBS="${work}/advisory-dbs"
    db="${ZTGATE_ADVISORY_DBS}/${ADVISORY_DB_DIRNAME}"
    mkdir -p "${ZTGATE_ADVISORY_DBS}"
    cp -R "${ADVISORY_DB_SNAPSHOT}" "${db}"
    chmod -R u+w "${db}"
    # cargo-deny wants a git repository and takes its freshness from the HEAD commit time (or the
    # mtime of .git/HEAD, whichever is newer). Date both to the snapshot, so deny.toml's
    # `maximum-db-staleness` measures the real age of the data, not the age of this copy.
    (
        cd "${db}"
        export GIT_AUTHOR_DATE="${snapshot_date}T00:00:00Z" GIT_COMMITTER_DATE="${snapshot_date}T00:00:00Z"
        git init -q
        git -c user.name=ci -c user.email=ci@localhost -c commit.gpgsign=false add -A
        git -c user.name=ci -c user.email=ci@localhost -c commit.gpgsign=false commit -q -m "advisory-db snapshot ${snapshot_date}"
        touch -d "${snapshot_date}T00:00:00Z" .git/HEAD
    )
    age_days=$(( ( $(date -u +%s) - $(date -u -d "${snapshot_date}" +%s) ) / 86400 ))
    echo "advisory-db snapshot: ${snapshot_date} (${age_days} days old)"
    if (( age_days > 90 )); then
        echo "warning: the advisory-db snapshot is ${age_days} days old; refresh ../shared/advisory-db (deny.toml fails past maximum-db-staleness)" >&2
    fi
    deny_opts=(--offline "${deny_opts[@]}")
else
    # No snapshot beside the repository: cargo-deny uses its own advisory database, i.e. its
    # default fetch of deny.toml's `db-urls` (RustSec) into its default location,
    # $CARGO_HOME/advisory-dbs (cloned on the first run, updated on later ones). This needs
    # network access; a failed fetch fails the check.
    export ZTGATE_ADVISORY_DBS="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
    echo "advisory-db: no snapshot at ${ADVISORY_DB_SNAPSHOT}; cargo-deny fetches its own into ${ZTGATE_ADVISORY_DBS}"
fi

# ---- cargo-deny -------------------------------------------------------------------------------
failed=()
# With the snapshot, cargo-deny runs offline (it must not try to fetch the advisory db), and
# `cargo metadata --offline` needs every crate of the lock file in the local cache: fetch them first
# (crates.io only), for all targets.
step "cargo fetch --locked"
cargo fetch --locked
for entry in "${DENY_GRAPHS[@]}"; do
    IFS='|' read -r label graph_opts check_opts <<<"${entry}"
    read -r -a graph_args <<<"${graph_opts}"
    read -r -a check_args <<<"${check_opts}"
    step "cargo deny [${label}]: ${graph_opts}"
    # Unmaintained advisories are warnings (see deny.toml); everything else that cargo-deny reports
    # as an error (vulnerability, unsound, license, banned duplicate, wildcard, source) fails.
    if ! cargo deny "${deny_opts[@]}" "${graph_args[@]}" check --warn unmaintained ${check_args[@]+"${check_args[@]}"}; then
        failed+=("cargo-deny[${label}]")
    fi
done

# ---- secrets ----------------------------------------------------------------------------------
step "detect-secrets against .secrets.baseline"
# Tracked files plus untracked files that are not git-ignored (so a local run catches a secret
# before it is committed), minus files deleted in the working tree. Cargo.lock is scanned but
# detect-secrets' built-in is_lock_file filter skips it (its checksums look like hex secrets).
# Whole paths are excluded in .secrets.baseline (filter `should_exclude_file`, which the hook
# applies): `^tests/vectors/wycheproof/`, the vendored upstream test vectors (public test keys,
# signatures and MACs by the thousand, none of them ours). To change the list:
# `python3 -m detect_secrets scan --baseline .secrets.baseline --exclude-files '<regex>'`
# (it replaces the list: give every pattern).
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "not a git work tree: the secret scan needs git ls-files"
listing="${work}/files-to-scan"
git ls-files -z --cached --others --exclude-standard >"${listing}"
files=()
while IFS= read -r -d '' f; do
    if [[ -f "$f" ]]; then files+=("$f"); fi
done < <(sort -zu "${listing}")
if (( ${#files[@]} == 0 )); then
    die "git ls-files listed no files to scan"
fi
# The pre-commit hook exits non-zero when it finds a secret that is not in the baseline (it may
# also rewrite the baseline's metadata: keep the baseline in sync with the pinned version).
if ! python3 -m detect_secrets.pre_commit_hook --baseline .secrets.baseline "${files[@]}"; then
    echo "detect-secrets: potential secret(s) above. Remove them; if one is a false positive, mark" >&2
    echo "the line with a '# pragma: allowlist secret' comment, or update and audit the baseline" >&2
    echo "(detect-secrets scan --baseline .secrets.baseline; detect-secrets audit .secrets.baseline)." >&2
    failed+=("detect-secrets")
fi

echo
if (( ${#failed[@]} > 0 )); then
    echo "supply-chain: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "supply-chain: OK (${#DENY_GRAPHS[@]} cargo-deny graphs, ${#files[@]} files scanned for secrets)"
