"""Build the compiled fast path: every ``src/misdtcp/**/*.pyx`` becomes an extension
named after its path (``src/misdtcp/runtime/sequencer.pyx`` -> ``misdtcp.runtime.sequencer``).

Cython translation and C compilation both run in parallel, one job per CPU
this process may use (``MISDTCP_JOBS`` overrides): a fresh machine compiles
the whole package in about a minute instead of several.
"""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join("src", "misdtcp")
INCLUDE = os.path.join(SRC, "include")
JOBS = int(os.environ.get("MISDTCP_JOBS", "0")) or len(os.sched_getaffinity(0))


def module_name(pyx: str) -> str:
    relative = os.path.relpath(os.path.splitext(pyx)[0], "src")
    return relative.replace(os.sep, ".")


def extensions():
    # MISDTCP_ONLY=_tcpcore,runtime.sequencer rebuilds a subset (handy while editing one module).
    only = set(filter(None, os.environ.get("MISDTCP_ONLY", "").split(",")))
    exts = []
    for pyx in sorted(glob.glob(os.path.join(SRC, "**", "*.pyx"), recursive=True)):
        name = module_name(pyx)
        if only and name.removeprefix("misdtcp.") not in only:
            continue
        exts.append(
            Extension(
                name,
                [pyx],
                include_dirs=[INCLUDE],
                extra_compile_args=["-O2", "-Wno-unused-function", "-Wno-unreachable-code"],
            )
        )
    return exts


class ParallelBuildExt(build_ext):
    """build_ext that compiles the extensions in parallel by default."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = JOBS


setup(
    ext_modules=cythonize(
        extensions(),
        language_level=3,
        nthreads=JOBS,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        include_path=["src", SRC],
    ),
    cmdclass={"build_ext": ParallelBuildExt},
    package_dir={"": "src"},
)
