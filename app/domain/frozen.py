"""Building the domain's frozen values (events, commands, wallet states) without their generated `__init__`.

A frozen dataclass's `__init__` sets each field through `object.__setattr__(self, name, value)` (a global
lookup, an attribute lookup and a generic call per field): building a decoded event cost as much as a third
of decoding it, and a `WalletState` most of an `evolve`. The hot paths (the codecs' decode, `evolve`, the
store's state decode) build through `builder(cls)`, which sets each slot with the slot's own descriptor. What
it returns is exactly what `cls(...)` returns: the same type, fields, equality, hash and immutability.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence
from typing import Any, Callable, TypeVar

T = TypeVar("T")

# Names the generated function uses besides the fields' (no field may be called so).
_RESERVED = frozenset({"_new", "_cls", "_instance"})


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    for klass in cls.__mro__:
        descriptor = klass.__dict__.get(name)
        if descriptor is not None:
            if not isinstance(descriptor, types.MemberDescriptorType):
                raise TypeError(f"{cls.__name__}.{name} is not a slot")
            return descriptor.__set__
    raise TypeError(f"{cls.__name__} has no slot {name!r}")


def builder(cls: type[T], positional: Sequence[str] | None = None) -> Callable[..., T]:
    """A function taking the same arguments as `cls` (a frozen dataclass with slots, no `__post_init__`, no
    default factories) and returning the instance `cls(...)` would, without running its `__init__`.

    With `positional` (every field name once, in any order) it takes every field positionally in that order
    instead, without defaults: a decoder's order. Raises TypeError for a class it cannot build exactly, or a
    `positional` that is not its fields (checked once, here)."""
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} is not a frozen dataclass")
    if "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} needs slots and no __post_init__")
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    positional_parameters: list[str] = []
    keyword: list[str] = []
    lines = ["    _instance = _new(_cls)"]
    for field in dataclasses.fields(cls):
        name = field.name
        if (not field.init or field.default_factory is not dataclasses.MISSING or name in _RESERVED
                or name.startswith("_set_") or name.startswith("_default_")):
            raise TypeError(f"{cls.__name__}.{name} cannot be built without __init__")
        parameter = name
        if field.default is not dataclasses.MISSING:
            namespace[f"_default_{name}"] = field.default
            parameter = f"{name}=_default_{name}"
        (keyword if field.kw_only else positional_parameters).append(parameter)
        namespace[f"_set_{name}"] = _slot_setter(cls, name)
        lines.append(f"    _set_{name}(_instance, {name})")
    parameters = positional_parameters + (["*"] + keyword if keyword else [])
    if positional is not None:
        if sorted(positional) != sorted(field.name for field in dataclasses.fields(cls)):
            raise TypeError(f"{list(positional)} are not the fields of {cls.__name__}")
        parameters = list(positional)
    source = f"def build_{cls.__name__}({', '.join(parameters)}):\n" + "\n".join(lines) + "\n    return _instance\n"
    exec(compile(source, f"<builder of {cls.__qualname__}>", "exec"), namespace)  # as dataclasses builds __init__
    build = namespace[f"build_{cls.__name__}"]
    build.__qualname__ = f"builder({cls.__qualname__})"
    build.__doc__ = f"{cls.__name__}(...) without its __init__ (app/domain/frozen.py)."
    return build
