"""Which modules run compiled in this process (the list, and a check per module).

setup.py compiles each `app/<module>.py` that has an `app/<module>.pxd` beside it (docs/ARCHITECTURE.md); where
the install found no C compiler, the same source runs interpreted: correct, but the codec is 2 to 4 times
slower. A worker says so at start (a warning per interpreted module) and exports `wallet_compiled_module`
(1 compiled, 0 interpreted), so an image built without a compiler shows on a dashboard, not only in a profile.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

# Beside each build, setup.py writes `<build>.source-sha256`: the digest of the source it was built from.
DIGEST_SUFFIX = ".source-sha256"
# The modules setup.py compiles (tests/unit/test_compiled.py checks this against the `.pxd` files).
COMPILED_MODULES = ("app.avro_reader", "app.avro_writer", "app.murmur2")


def is_compiled(name: str) -> bool:
    """Whether module `name` was loaded from a compiled build rather than its `.py`."""
    return not importlib.import_module(name).__file__.endswith(".py")


def compiled_modules() -> dict[str, bool]:
    """Each module of COMPILED_MODULES -> whether this process runs it compiled."""
    return {name: is_compiled(name) for name in COMPILED_MODULES}


def source_digest(source: Path) -> str:
    """sha256 over a compiled module's `.py`, then its `.pxd`: what setup.py records beside a build of it
    (setup.py has its own copy of these lines: it runs before this package can be imported)."""
    digest = hashlib.sha256()
    for path in (source.with_suffix(".py"), source.with_suffix(".pxd")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def recorded_digest(built: Path) -> str | None:
    """The digest setup.py recorded beside the build at `built`; None when it recorded none."""
    record = Path(f"{built}{DIGEST_SUFFIX}")
    return record.read_text().strip() if record.exists() else None
