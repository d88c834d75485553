"""Compiled builds of the hot loops over bytes (everything else is in pyproject.toml).

`app/avro_reader.py`, `app/avro_writer.py` and `app/murmur2.py` are plain Python; Cython compiles them with the
C types of the `.pxd` beside each (the codec 2.3 to 3.8 times as fast, murmur2 about 60 times:
docs/BENCHMARKS.md). Where no C compiler is found the build goes on
without them and the same source runs interpreted (tests/unit/test_compiled.py says which one is loaded).
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

# The modules compiled: every app/<module>.py with an app/<module>.pxd beside it (the Makefile rebuilds on a
# change to either).
COMPILED = sorted(path.with_suffix(".py") for path in Path("app").glob("*.pxd"))

setup(ext_modules=cythonize(
    [Extension(".".join(path.with_suffix("").parts), [str(path)], optional=True) for path in COMPILED],
    compiler_directives={"language_level": 3, "annotation_typing": False},
))
