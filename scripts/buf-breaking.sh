#!/usr/bin/env bash
# buf breaking (FILE rules) against the contracts on main. On main itself this compares
# the tree with its last commit, so an uncommitted breaking edit is caught too.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=node_modules/.bin/buf
if ! git rev-parse --verify -q HEAD >/dev/null; then
  echo "buf breaking: no commit to compare with; skipped"
  exit 0
fi
against="main"
git rev-parse --verify -q "$against" >/dev/null || against="HEAD"
if [[ -z "$(git ls-tree -r --name-only "$against" -- protos)" ]]; then
  echo "buf breaking: $against has no protos yet; nothing to compare"
  exit 0
fi
"$BUF" breaking --against ".git#ref=$against"
echo "buf breaking: no breaking change against $against"
