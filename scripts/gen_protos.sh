#!/usr/bin/env bash
# Regenerate the gRPC Python stubs (perseus/v1/*_pb2*.py, *.pyi) from proto/perseus/v1/*.proto.
#
#   bash scripts/gen_protos.sh [OUT_DIR]     default OUT_DIR: the repository root
#
# The stubs are committed; scripts/check_protos.sh (CI) fails when they are stale.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT}"
PY="${PERSEUS_PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
cd "$ROOT"
mkdir -p "$OUT/perseus/v1"
"$PY" -m grpc_tools.protoc -I proto --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" proto/perseus/v1/*.proto
[[ -f "$OUT/perseus/v1/__init__.py" ]] || printf '"""Generated gRPC stubs of the Perseus v1 wire contract (do not edit; see proto/)."""\n' > "$OUT/perseus/v1/__init__.py"
