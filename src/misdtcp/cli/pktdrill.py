"""`misdtcp pktdrill [--relaxed] SCRIPT...`: run packetdrill scripts against the core.

Every script runs against a fresh core in virtual time (conformance/runner.py)
and gets one line, ``PASS path`` or ``FAIL path: line N: expected …, got …``;
the last line is ``N passed, M failed``.  A directory stands for the ``.pkt``
scripts below it.  Exit status 0 only when every script passed, 1 when one
failed; a missing file or an empty directory is a one-sentence error before
anything runs (exit status 2).
"""
from __future__ import annotations

import os
import sys

from misdtcp.cli.errors import UsageError


def collect(paths: list[str]) -> list[str]:
    """The scripts named on the command line, directories expanded (sorted)."""
    scripts = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                           for name in names if name.endswith(".pkt"))
            if not found:
                raise UsageError(f"there are no .pkt scripts in the directory {path}")
            scripts += found
        elif os.path.isfile(path):
            if not os.access(path, os.R_OK):
                raise UsageError(f"the script {path} is not readable")
            scripts.append(path)
        else:
            raise UsageError(f"there is no script or directory {path}")
    return scripts


def run_pktdrill(paths: list[str], relaxed: bool = False, out=None) -> int:
    from misdtcp.conformance.runner import run_script
    out = out or sys.stdout
    scripts = collect(paths)
    passed = failed = shells = codes = 0
    for path in scripts:
        result = run_script(path, relaxed=relaxed)
        print(result.report(), file=out, flush=True)
        passed += result.passed
        failed += not result.passed
        shells += result.shell_commands
        codes += result.code_blocks
    if shells or codes:
        print(f"not run: {shells} shell command{'s' if shells != 1 else ''} and {codes} code "
              f"block{'s' if codes != 1 else ''} (they configure an operating system under test)", file=out)
    print(f"{passed} passed, {failed} failed", file=out)
    return 0 if failed == 0 else 1
