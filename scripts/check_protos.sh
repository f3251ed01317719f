#!/usr/bin/env bash
# CI check: the committed stubs in perseus/v1 must be exactly what grpcio-tools generates from proto/.
# Regenerates into a temporary directory and diffs; exits 1 naming every stale or missing file.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
bash "$ROOT/scripts/gen_protos.sh" "$TMP"
status=0
for generated in "$TMP"/perseus/v1/*; do
  name="$(basename "$generated")"
  [[ "$name" == "__init__.py" ]] && continue
  committed="$ROOT/perseus/v1/$name"
  if [[ ! -f "$committed" ]]; then
    echo "check_protos: perseus/v1/$name is missing; run: bash scripts/gen_protos.sh" >&2
    status=1
  elif ! cmp -s "$generated" "$committed"; then
    echo "check_protos: perseus/v1/$name is stale (differs from proto/); run: bash scripts/gen_protos.sh" >&2
    status=1
  fi
done
for committed in "$ROOT"/perseus/v1/*_pb2*.py "$ROOT"/perseus/v1/*_pb2*.pyi; do
  [[ -e "$committed" ]] || continue
  name="$(basename "$committed")"
  if [[ ! -f "$TMP/perseus/v1/$name" ]]; then
    echo "check_protos: perseus/v1/$name has no .proto source; delete it or restore its proto" >&2
    status=1
  fi
done
[[ $status -eq 0 ]] && echo "check_protos: stubs up to date"
exit $status
