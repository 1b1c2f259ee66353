#!/usr/bin/env bash
# Regenerates every client stub from protos/ with local plugins only:
#   Python      protocol/fleetwire/v1/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py  (grpcio-tools)
#   TypeScript  clients/typescript/src/gen/fleetwire/v1/*_pb.ts   (buf + protoc-gen-es from
#               node_modules, as buf.gen.yaml says; `make tools` installs both)
# Generated, never edited. Usage: scripts/gen-proto.sh [OUT]; OUT (default: the repository)
# is where both trees are written, so tests can regenerate into a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT="${1:-.}"
BUF=node_modules/.bin/buf
mkdir -p "$OUT/protocol/fleetwire/v1"
"$PY" -m grpc_tools.protoc \
  -I protos \
  --python_out="$OUT/protocol" --pyi_out="$OUT/protocol" --grpc_python_out="$OUT/protocol" \
  protos/fleetwire/v1/*.proto
cat > "$OUT/protocol/fleetwire/v1/__init__.py" <<'PY'
"""Generated protobuf and gRPC stubs for fleetwire.v1 (make proto). Do not edit."""
PY
: > "$OUT/protocol/fleetwire/v1/py.typed" # the .pyi stubs are the types (PEP 561)

if [[ ! -x $BUF || ! -x node_modules/.bin/protoc-gen-es ]]; then
  echo "gen-proto: buf or protoc-gen-es missing from node_modules; run \`make tools\`" >&2
  exit 1
fi
"$BUF" generate --template buf.gen.yaml --output "$OUT"
