"""Which modules run compiled in this process (the list, and a check per module).

setup.py compiles each `app/<module>.py` that has an `app/<module>.pxd` beside it (docs/ARCHITECTURE.md); where
the install found no C compiler, the same source runs interpreted: correct, but the codec is 2 to 4 times
slower. A worker says so at start (a warning per interpreted module) and exports `wallet_compiled_module`
(1 compiled, 0 interpreted), so an image built without a compiler shows on a dashboard, not only in a profile.
"""

from __future__ import annotations

import importlib

# The modules setup.py compiles (tests/unit/test_compiled.py checks this against the `.pxd` files).
COMPILED_MODULES = ("app.avro_reader", "app.avro_writer", "app.murmur2")


def is_compiled(name: str) -> bool:
    """Whether module `name` was loaded from a compiled build rather than its `.py`."""
    return not importlib.import_module(name).__file__.endswith(".py")


def compiled_modules() -> dict[str, bool]:
    """Each module of COMPILED_MODULES -> whether this process runs it compiled."""
    return {name: is_compiled(name) for name in COMPILED_MODULES}
