#!/usr/bin/env bash
# Regenerates the Python stubs from protos/ with grpcio-tools (local plugins only).
# Output: fleetwire/v1/*_pb2.py, *_pb2.pyi and *_pb2_grpc.py — generated, never edited.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT="${1:-.}"
mkdir -p "$OUT/fleetwire/v1"
"$PY" -m grpc_tools.protoc \
  -I protos \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  protos/fleetwire/v1/*.proto
cat > "$OUT/fleetwire/v1/__init__.py" <<'PY'
"""Generated protobuf and gRPC stubs for fleetwire.v1 (make proto). Do not edit."""
PY
