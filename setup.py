"""Compiled builds of the hot loops over bytes (everything else is in pyproject.toml).

`app/avro_reader.py`, `app/avro_writer.py` and `app/murmur2.py` are plain Python; Cython compiles them with the
C types of the `.pxd` beside each (the codec 2.3 to 3.8 times as fast, murmur2 about 60 times:
docs/BENCHMARKS.md). Where no C compiler is found the build goes on
without them and the same source runs interpreted (tests/unit/test_compiled.py says which one is loaded).

Beside each build it writes `<build>.source-sha256`: the digest of the `.py` and `.pxd` it was built from
(`source_digest`), so a test can tell a build of other source from one that is only older than a checkout.
"""

import hashlib
import shutil
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The modules compiled: every app/<module>.py with an app/<module>.pxd beside it (the Makefile rebuilds on a
# change to either).
COMPILED = sorted(path.with_suffix(".py") for path in Path("app").glob("*.pxd"))
# The suffix of the file beside each build that names the source it was built from (app/compiled.py).
DIGEST_SUFFIX = ".source-sha256"


def source_digest(source: Path) -> str:
    """sha256 over a compiled module's `.py` and then its `.pxd` (app/compiled.py has the same function, for the
    checks at run time: this file runs before the package can be imported)."""
    digest = hashlib.sha256()
    for path in (source.with_suffix(".py"), source.with_suffix(".pxd")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


class BuildWithDigest(build_ext):
    """build_ext that records, once a module is built, the digest of the source it was built from, beside the
    build and beside its in-place copy (`pip install -e .` builds in a scratch folder, then copies). A module
    the build skips (no C compiler: the extensions are optional) gets no digest and runs interpreted."""

    def build_extension(self, ext: Extension) -> None:
        super().build_extension(ext)
        source = Path(*ext.name.split(".")).with_suffix(".py")
        Path(self.get_ext_fullpath(ext.name) + DIGEST_SUFFIX).write_text(source_digest(source) + "\n")

    def copy_extensions_to_source(self) -> None:
        super().copy_extensions_to_source()
        for ext in self.extensions:
            filename = self.get_ext_filename(ext.name)
            built = Path(self.build_lib, filename + DIGEST_SUFFIX)
            in_place = Path(filename + DIGEST_SUFFIX)  # the packages sit at the repository's root
            if built.exists():
                shutil.copyfile(built, in_place)
            else:
                in_place.unlink(missing_ok=True)  # no build of this source: no claim about one


setup(
    cmdclass={"build_ext": BuildWithDigest},
    ext_modules=cythonize(
        [Extension(".".join(path.with_suffix("").parts), [str(path)], optional=True) for path in COMPILED],
        compiler_directives={"language_level": 3, "annotation_typing": False},
    ),
)
