# Sourced by the scripts in this folder: finds Python 3.10+, creates the virtual environment
# VENV (default .venv) and installs the project (editable) with the extras named in EXTRAS
# (comma-separated, default: hiredis,server,http,fastapi,litestar,otel) and the dependency groups
# named in DEP_GROUPS (space-separated, default: dev), under the pip constraints file
# CONSTRAINTS if one is named (pip itself and the build backend too).
# The environment is made anew when pyproject.toml or the constraints file changed since it was
# installed (so that nothing of an earlier set lingers), and always with FRESH=1.
# PICK=oldest takes the oldest Python 3.10+ found instead of the default one (PYTHON=... names
# one). A constraints file names the Python versions it was resolved for (its line "Resolved for
# Python 3.10, 3.11 on ..."): only those are picked (see UNCOVERED below). Sets PY and
# constraints (the constraints file used, empty when none).
# Candidates: $PYTHON alone if set, else the usual names on PATH, then pyenv's installed
# versions (their shims only answer for the selected version, so the binaries are tried
# directly).
python_candidates() {
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
        return 0
    fi
    local name
    for name in python3 python3.10 python3.11 python3.12 python3.13 python3.14 python; do
        command -v "$name" 2>/dev/null || true
    done
    ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.*/bin/python3 2>/dev/null || true
}
# The Python versions the constraints file was resolved for ("3.10 3.11"), empty for all.
covered_pythons() {
    [ -n "${CONSTRAINTS:-}" ] || return 0
    sed -n 's/^# Resolved for Python \([0-9., ]*\) on .*/\1/p' "$CONSTRAINTS" | tr -d ,
}
# Prints the first working Python 3.10+ (with PICK=oldest: the oldest minor version found)
# among those the constraints file covers.
pick_python() {
    local cand version best="" best_version="" covered
    covered=$(covered_pythons)
    while IFS= read -r cand; do
        version=$("$cand" -c 'import sys; v = sys.version_info
print(f"{v[1]:03d}" if v >= (3, 10) else "")' 2>/dev/null) || continue
        [ -n "$version" ] || continue
        if [ -n "$covered" ] && [[ " $covered " != *" 3.$((10#$version)) "* ]]; then
            continue
        fi
        if [ "${PICK:-}" != oldest ]; then
            echo "$cand"
            return 0
        fi
        if [ -z "$best" ] || [[ "$version" < "$best_version" ]]; then
            best=$cand
            best_version=$version
        fi
    done < <(python_candidates)
    if [ -n "$best" ]; then
        echo "$best"
        return 0
    fi
    if [ -n "$covered" ]; then
        echo "error: $CONSTRAINTS covers Python $covered only, and none of them was found" \
            "${PYTHON:+(PYTHON=$PYTHON) }: install one, or set PYTHON=/path/to/one" >&2
    elif [ -n "${PYTHON:-}" ]; then
        echo "error: PYTHON=$PYTHON is not a working Python 3.10 or newer" >&2
    else
        echo "error: Python 3.10 or newer is needed (set PYTHON=/path/to/python)" >&2
    fi
    return 1
}
if ! base_python=$(pick_python); then
    # No Python the pins cover: UNCOVERED=unpinned installs unpinned (as a fresh install would
    # today) on any Python 3.10+; otherwise status 77, which scripts/test reports as a skip.
    if [ -n "${CONSTRAINTS:-}" ] && [ "${UNCOVERED:-}" = unpinned ] &&
        base_python=$(CONSTRAINTS='' pick_python); then
        echo "warning: installing unpinned on $("$base_python" -V 2>&1) instead" >&2
        CONSTRAINTS=''
    else
        return 77 2>/dev/null || exit 77
    fi
fi
venv=${VENV:-.venv}
same_python='import sys; print(sys.version_info[:2])'
if [ -x "$venv/bin/python" ] &&
    [ "$("$venv/bin/python" -c "$same_python")" != "$("$base_python" -c "$same_python")" ]; then
    rm -rf "$venv" # made with another Python than the one picked now
fi
extras=${EXTRAS-hiredis,server,http,fastapi,litestar,otel}
groups=${DEP_GROUPS-dev}
constraints=${CONSTRAINTS:-}
inputs=$(cat pyproject.toml ${constraints:+"$constraints"} | cksum | cut -d' ' -f1)
stamp="$venv/.installed-$inputs-${extras//,/_}-${groups// /_}"
if [ -d "$venv" ] && { [ -n "${FRESH:-}" ] || ! compgen -G "$venv/.installed-$inputs-*" >/dev/null; }; then
    rm -rf "$venv" # made from other inputs (or FRESH asked for a new one)
fi
if [ ! -x "$venv/bin/python" ]; then
    "$base_python" -m venv "$venv"
fi
PY=$venv/bin/python
install=(-e ".${extras:+[$extras]}")
pinned=()
for group in $groups; do
    install+=(--group "$group")
done
if [ -n "$constraints" ]; then
    # --build-constraint (pip 25.3+; the pinned pip has it): the build backend that installs
    # the project is pinned too.
    pinned=(-c "$constraints")
    install+=(-c "$constraints" --build-constraint "$constraints")
fi
if [ ! -f "$stamp" ]; then
    # Dependency groups (PEP 735) need pip 25.1 or newer.
    "$PY" -m pip install --quiet --upgrade "pip>=25.1" ${pinned[@]+"${pinned[@]}"}
    "$PY" -m pip install --quiet "${install[@]}"
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
