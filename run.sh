#!/usr/bin/env bash
# Perseus launcher. The first call bootstraps a local .venv from requirements.lock; later calls reuse it.
#
#   bash run.sh demo                         the whole story on simulated GPUs driven by a real profile
#   bash run.sh test                         lint, type check and the test suite
#   bash run.sh gpu-check [--measure-only]   hardware acceptance check on your GPU node
#   bash run.sh MODEL MB NMB [options]       pipeline training: profile, or train with a plan applied
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

bootstrap() {
  local stamp="$VENV/.perseus-lock" want
  want="$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
  if [[ -x "$PY" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  echo "run.sh: preparing $VENV (first run only)" >&2
  [[ -x "$PY" ]] || python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$PY" -m pip install --quiet --disable-pip-version-check -r requirements.lock
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
}

provision_postgres() {
  # The PostgreSQL tests start a throwaway cluster from Debian's packages: install them before
  # pytest, never during it. Without them those tests fail under CI and skip elsewhere.
  if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; then
    return
  fi
  local sudo=()
  [[ "$(id -u)" -eq 0 ]] || sudo=(sudo -n)
  if command -v apt-get >/dev/null && { [[ ${#sudo[@]} -eq 0 ]] || sudo -n true 2>/dev/null; }; then
    echo "run.sh: installing PostgreSQL (Debian packages) for the database tests" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "run.sh: PostgreSQL is not installed and cannot be installed here (needs apt-get as root);" \
      "its tests will skip (and fail under CI)" >&2
  fi
}

usage() {
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  ""|-h|--help|help)
    usage
    echo
    if [[ -x "$PY" ]]; then
      "$PY" -m merak_integration.launch --help
    else
      echo "Training options are listed here once .venv exists (bash run.sh demo or bash run.sh test prepares it)."
    fi
    ;;
  test)
    shift
    bootstrap
    provision_postgres
    "$VENV/bin/ruff" check .
    "$VENV/bin/mypy" perseus merak_integration
    # Compile the solver's step loop now (once per machine, about 20 s) rather than inside
    # whichever test solves first.
    "$PY" -c "from perseus.solver.native import step_loop; step_loop()"
    # Two pytest workers (xdist), one per core of the 2-core CI machine; the tests that start torchrun
    # form one xdist group (one at a time, on one worker), everything else spreads over both.
    # A later -n in "$@" wins (-n 0: one process).
    workers="$(nproc 2>/dev/null || echo 1)"
    exec "$PY" -m pytest -q -n "$(( workers < 2 ? workers : 2 ))" --dist loadgroup "$@"
    ;;
  demo)
    shift
    bootstrap
    "$PY" -c "from perseus.solver.native import step_loop; step_loop()"
    exec "$PY" -m perseus.demo "$@"
    ;;
  gpu-check)
    shift
    bootstrap
    exec "$PY" -m perseus.device.hwcheck "$@"
    ;;
  *)
    bootstrap
    exec "$PY" -m merak_integration.launch "$@"
    ;;
esac
