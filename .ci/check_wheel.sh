#!/usr/bin/env bash
# Ship what is tested: build the sdist and the wheel from this tree, install the wheel with
# [all,dev] into a fresh venv, and check it there with the source tree out of reach:
#   1. python -m build (sdist, then the wheel from the sdist); any Python warning or deprecation
#      in its output fails; twine check --strict on both
#   2. the sdist holds every file of adapters/ and reranker/, the wheel exactly those files
#      (.ci/check_wheel.py archives); the test suite is copied then, from the tree just built
#   3. a fresh venv ($CROSSRANK_WHEEL_VENV, /tmp/crossrank-wheel-venv, removed first and left
#      in place after) gets the wheel[all,dev]
#      (through pip's cache, ~/.cache/pip, where the index's answers can be cached)
#   4. from a temp folder, with python -I: crossrank comes from that venv's site-packages, every
#      module of the source imports from it, `crossrank --help`, every subcommand's --help and
#      every __main__ exit 0 (.ci/check_wheel.py installed)
#   5. the unit tests (tests/ and the root conftest.py, copied with the rest of the tree but
#      without adapters/ and reranker/) run against the wheel, and .ci/wheel_pytest_guard.py
#      fails the session if any crossrank module came from elsewhere
# Needs the dev venv (make setup: build and twine are dev extras). Fails loudly, skips nothing.
# Usage: .ci/check_wheel.sh  (or make wheel-check)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
source_tree="$(pwd)"
dev_python="${DEV_PYTHON:-$source_tree/.venv/bin/python}"
base_python="${PYTHON:-python3.11}"
wheel_venv="${CROSSRANK_WHEEL_VENV:-/tmp/crossrank-wheel-venv}"
read -r -a pytest_args <<<"${PYTEST_ARGS:--p no:cacheprovider -ra}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

fail() { echo "check_wheel: FAILED: $*" >&2; exit 1; }
step() { echo; echo "=== check_wheel: $* ($((SECONDS - started))s)"; }
started=$SECONDS

[[ -x "$dev_python" ]] || fail "$dev_python not found: run make setup first"
"$dev_python" -c 'import build, twine' 2>/dev/null \
    || fail "build/twine missing from $dev_python: run make setup (they are dev extras)"
[[ "$wheel_venv" != "$source_tree"* ]] || fail "the wheel venv $wheel_venv is inside the tree"

work="$(mktemp -d /tmp/crossrank-wheel-check.XXXXXX)"
trap 'rm -rf "$work"' EXIT

step "build the sdist and the wheel"
"$dev_python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; fail "python -m build"; }
tail -n 1 "$work/build.log"
# Python warnings (SetuptoolsDeprecationWarning, ...) and pip/setuptools deprecation notes;
# the lines that name the files copied are left out (a module may be called deprecation.py).
if grep -vE "^(copying|adding|creating|removing) " "$work/build.log" \
        | grep -E '[A-Za-z]*Warning\b|[Dd][Ee][Pp][Rr][Ee][Cc][Aa][Tt]'; then
    fail "python -m build printed the warnings above"
fi
shopt -s nullglob
sdists=("$work"/dist/*.tar.gz)
wheels=("$work"/dist/*.whl)
shopt -u nullglob
[[ ${#sdists[@]} -eq 1 && ${#wheels[@]} -eq 1 ]] \
    || fail "expected one sdist and one wheel in $work/dist, got: $(ls "$work/dist")"
sdist="${sdists[0]}"
wheel="${wheels[0]}"
"$dev_python" -m twine check --strict "$sdist" "$wheel"

step "sdist and wheel contents"
modules="$work/modules.txt"  # the source's modules, as built: what the installed wheel must have
"$dev_python" .ci/check_wheel.py archives "$source_tree" "$sdist" "$wheel" "$modules"
suite="$work/suite"  # copied now, from the tree that was just built
"$dev_python" .ci/check_wheel.py suite "$source_tree" "$suite"
cp .ci/wheel_pytest_guard.py "$suite/wheel_pytest_guard.py"

step "fresh venv $wheel_venv: $(basename "$wheel")[all,dev]"
rm -rf "$wheel_venv"
"$base_python" -m venv "$wheel_venv"
"$wheel_venv/bin/python" -m pip install -q --upgrade pip
echo "pip cache: $("$wheel_venv/bin/python" -m pip cache dir)"
"$wheel_venv/bin/python" -m pip install -q "${wheel}[all,dev]"
"$wheel_venv/bin/python" -m pip check

step "the installed package, from outside the source tree"
mkdir "$work/empty"
no_python_env=(env -u PYTHONPATH -u PYTHONHOME -u PYTHONSTARTUP -u PYTHONSAFEPATH)
(cd "$work/empty" && "${no_python_env[@]}" "$wheel_venv/bin/python" -I \
    "$source_tree/.ci/check_wheel.py" installed "$source_tree" "$modules") \
    || fail "the installed package (see above)"

step "unit tests against the installed wheel"
(cd "$suite" && "${no_python_env[@]}" CROSSRANK_SOURCE_TREE="$source_tree" \
    "$wheel_venv/bin/python" -m pytest tests -p wheel_pytest_guard "${pytest_args[@]}") \
    || fail "the unit tests against the installed wheel (see above)"

# The venv (several GB) stays for a look; the next run starts by removing it.
echo "check_wheel: sdist, wheel and the installed package passed in $((SECONDS - started))s"
