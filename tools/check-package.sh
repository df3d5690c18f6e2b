#!/bin/sh
# The package as a user gets it: build the sdist, build a wheel from that
# sdist (so the sdist is complete), install the wheel into a fresh virtual
# environment, import the compiled modules from there and run the CLI.
# Usage: tools/check-package.sh BUILD_PYTHON   (a Python with requirements-build.txt;
# PYTHON, the interpreter for the fresh venv, defaults to python3).
set -e
BUILD_PY=${1:?usage: tools/check-package.sh BUILD_PYTHON}
PYTHON=${PYTHON:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
echo "misdtcp: building the sdist and, from it, a wheel"
# without --sdist/--wheel, build makes the sdist and then the wheel from it
"$BUILD_PY" -m build --no-isolation --outdir "$tmp/dist" "$here" > "$tmp/build.log" 2>&1 || {
    tail -30 "$tmp/build.log"; echo "misdtcp: the sdist or the wheel did not build" >&2; exit 1; }
sdist=$(ls "$tmp"/dist/misdtcp-*.tar.gz)
wheel=$(ls "$tmp"/dist/misdtcp-*.whl)
for member in misdtcp-0.1.0/src/misdtcp/_tcpcore.pyx misdtcp-0.1.0/src/misdtcp/include/atomics.h \
              misdtcp-0.1.0/src/misdtcp/runtime/layout.pxd misdtcp-0.1.0/setup.py; do
    tar -tzf "$sdist" | grep -qx "$member" || { echo "misdtcp: the sdist lacks $member" >&2; exit 1; }
done
echo "misdtcp: installing $(basename "$wheel") into a fresh virtual environment"
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q "$wheel"
cd "$tmp"    # away from the source tree: what is imported comes from the venv
"$tmp/venv/bin/python" -c '
import misdtcp, misdtcp._tcpcore, misdtcp._ring, misdtcp.runtime.loops, misdtcp.runtime.sequencer
import misdtcp.runtime.forker, misdtcp.api
assert misdtcp.__file__.startswith("'"$tmp"'/venv/"), misdtcp.__file__
print("misdtcp: imported from the wheel:", misdtcp.__file__)'
"$tmp/venv/bin/misdtcp" --help > "$tmp/help.txt"
grep -q "misdtcp serve" "$tmp/help.txt" || grep -q "serve" "$tmp/help.txt"
"$tmp/venv/bin/misdtcp" serve --help > /dev/null
echo "misdtcp: the sdist and the wheel build and install; misdtcp --help runs"
