#!/usr/bin/env bash
# Creates the Python venv for benches/eval (py-motmetrics and its numpy/scipy/pandas), pinned by
# benches/eval/requirements.txt. Idempotent: does nothing when the venv already has every pin.
#
#   bash benches/eval/setup.sh
#
# VAKT_EVAL_VENV   venv folder (default .data/eval-venv; relative paths are from the repo root)
# VAKT_EVAL_PYTHON python to build it from (default /usr/bin/python3, Debian's, else python3)
# Needs `python3 -m venv` (Debian: python3-venv, installed here when running as root) and PyPI.
# Prints the venv's python on its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
req=benches/eval/requirements.txt
venv=${VAKT_EVAL_VENV:-.data/eval-venv}
if [ -n "${VAKT_EVAL_PYTHON:-}" ]; then base=$VAKT_EVAL_PYTHON
elif [ -x /usr/bin/python3 ]; then base=/usr/bin/python3
else base=python3; fi

# Exit 0 when the interpreter given has exactly the versions pinned in $req.
pins_ok() {
  "$1" - "$req" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        bad.append(f"{name} {have or 'missing'} (want {want})")
if bad:
    print("eval venv: " + ", ".join(bad), file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

if [ -x "$venv/bin/python" ] && pins_ok "$venv/bin/python"; then
  echo "eval venv up to date: $venv"
  echo "$venv/bin/python"
  exit 0
fi

if ! command -v "$base" >/dev/null 2>&1; then
  echo "setup.sh: no python3 found ($base); install Debian's python3 and python3-venv" >&2
  exit 1
fi
# A venv whose python no longer runs (its base interpreter moved) is rebuilt from scratch.
if [ -e "$venv" ] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
  echo "setup.sh: $venv is broken; recreating it" >&2
  rm -rf "$venv"
fi
if [ ! -e "$venv" ]; then
  # Debian's python3 makes venvs only with python3-venv (ensurepip and its wheels).
  if ! "$base" -m venv "$venv"; then
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "setup.sh: $base cannot create a venv; installing Debian's python3-venv" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -q python3-venv </dev/null \
        || { apt-get update -q </dev/null && apt-get install -y -q python3-venv </dev/null; }
      "$base" -m venv "$venv" || {
        rm -rf "$venv"
        echo "setup.sh: $base still cannot create a venv after installing python3-venv" >&2
        exit 1
      }
    else
      echo "setup.sh: $base cannot create a venv. On Debian, install python3-venv as root first:" >&2
      echo "    apt-get install python3-venv" >&2
      exit 1
    fi
  fi
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q --only-binary=:all: -r "$req" </dev/null
if ! pins_ok "$venv/bin/python"; then
  echo "setup.sh: $venv does not have the versions pinned in $req after installing" >&2
  exit 1
fi
echo "eval venv ready: $venv ($("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])'))"
echo "$venv/bin/python"
