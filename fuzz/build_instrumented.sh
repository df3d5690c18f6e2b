#!/bin/sh
# Build a coverage-instrumented, AddressSanitizer-checked copy of the core's
# extensions into build/fuzz-native/ (the regular in-place build is left
# alone).  Needs clang (apt-get install clang).  Use it with:
#
#   MISDTCP_NATIVE=build/fuzz-native \
#   LD_PRELOAD="$(python -c 'import atheris, os; print(os.path.join(atheris.path(), "asan_with_fuzzer.so"))')" \
#   ASAN_OPTIONS=detect_leaks=0,allocator_may_return_null=1 \
#   python fuzz/fuzz_core.py fuzz/corpus -max_total_time=600
set -e
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SAN=${SANITIZERS:-address,fuzzer-no-link}
CC=clang LDSHARED="clang -shared" \
CFLAGS="-fsanitize=$SAN -fno-omit-frame-pointer -g -O1" \
LDFLAGS="-fsanitize=$SAN" \
MISDTCP_ONLY=${MISDTCP_ONLY:-_tcpcore,wire.codec,wire.drops,core.ranges} \
    "$PY" setup.py -q build_ext --build-lib build/fuzz-native --build-temp build/fuzz-native-tmp --force
ls build/fuzz-native/misdtcp/
