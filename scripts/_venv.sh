# Sourced by the scripts in this folder: finds Python 3.10+, creates the virtual environment
# VENV (default .venv) once and installs the project (editable) with the extras named in EXTRAS
# (default: test,hiredis,bench). Sets PY.
pick_python() {
    for cand in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10 python; do
        [ -n "$cand" ] || continue
        command -v "$cand" >/dev/null 2>&1 || continue
        if "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
            echo "$cand"
            return 0
        fi
    done
    echo "error: Python 3.10 or newer is needed (set PYTHON=/path/to/python)" >&2
    return 1
}
base_python=$(pick_python)
venv=${VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
    "$base_python" -m venv "$venv"
fi
PY=$venv/bin/python
extras=${EXTRAS:-test,hiredis,bench}
stamp="$venv/.installed-$(cat pyproject.toml | cksum | cut -d' ' -f1)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -e ".[${extras}]"
    touch "$stamp"
fi
