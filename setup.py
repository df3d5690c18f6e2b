"""Build the compiled fast path: every ``src/misdtcp/*.pyx`` becomes an extension."""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join("src", "misdtcp")


def extensions():
    # MISDTCP_ONLY=_tcpcore,_wire rebuilds a subset (handy while editing one module).
    only = set(filter(None, os.environ.get("MISDTCP_ONLY", "").split(",")))
    exts = []
    for pyx in sorted(glob.glob(os.path.join(SRC, "*.pyx"))):
        base = os.path.splitext(os.path.basename(pyx))[0]
        if only and base not in only:
            continue
        name = "misdtcp." + base
        exts.append(
            Extension(
                name,
                [pyx],
                include_dirs=[os.path.join(SRC, "include")],
                extra_compile_args=["-O2", "-Wno-unused-function", "-Wno-unreachable-code"],
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        extensions(),
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        include_path=[SRC],
    ),
    package_dir={"": "src"},
)
