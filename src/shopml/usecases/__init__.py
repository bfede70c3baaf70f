"""The use cases: one module each. :func:`get_usecases` finds them, so adding a use case is
adding a module that defines a :class:`~shopml.usecases.base.UseCase` subclass."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from functools import lru_cache

from shopml.usecases.base import UseCase

# The order in which they are trained and listed (others found later go at the end).
ORDER = (
    "returns",
    "delivery-time",
    "clv",
    "high-value",
    "campaign",
    "recommender",
    "segments",
    "pricing",
)


@lru_cache(maxsize=1)
def get_usecases() -> dict[str, UseCase]:
    """Every use case defined in this package, by name."""
    found: dict[str, UseCase] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, UseCase)
                and obj is not UseCase
                and obj.__module__ == module.__name__
                and "name" in vars(obj)
            ):
                found[obj.name] = obj()
    ranked = sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return {n: found[n] for n in ranked}


def select_usecases(names: Iterable[str] | None) -> list[str]:
    """The use cases named (all of them for None or none named), checked: a ``ValueError``
    names the unknown ones and lists the known."""
    known = list(get_usecases())
    chosen = list(names or known)
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ValueError(f"unknown use case(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return chosen


def get_usecase(name: str) -> UseCase:
    usecases = get_usecases()
    if name not in usecases:
        raise KeyError(f"unknown use case {name!r}; known: {', '.join(usecases)}")
    return usecases[name]
