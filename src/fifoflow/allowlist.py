"""Which targets a worker may run: only public functions *defined* inside the modules it
was started with. The module name is checked before any import, so a job can never make a
worker import something else; the function's home module is checked after it, so a name an
allowed module merely imported (``from os import system``) cannot run either."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from .errors import UsageError
from .validation import TARGET_RE, validate_module


class TargetNotAllowed(Exception):
    """The target lies outside the modules this worker serves (never retried)."""


class TargetNotFound(Exception):
    """The target's module or function does not exist (never retried)."""


def inside(module_name: str, modules: Sequence[str]) -> bool:
    return any(module_name == m or module_name.startswith(m + ".") for m in modules)


def check_allowed(target: str, modules: Sequence[str]) -> None:
    """Before any import: the target must name a public function of an allowed module."""
    if not TARGET_RE.match(target):
        raise TargetNotAllowed(f"invalid target {target!r}")
    module_name, attr = target.split(":")
    if not inside(module_name, modules):
        raise TargetNotAllowed(
            f"target {target!r} is outside the modules this worker serves "
            f"({', '.join(modules)}); it was not imported"
        )
    if attr.startswith("_"):
        raise TargetNotAllowed(f"target {target!r} is private: only public names can run")


def import_modules(modules: Sequence[str]) -> None:
    """At a worker's start (as ``celery -A`` does): a module that cannot be imported is a
    usage error, not a queue of jobs that fail one by one."""
    for m in modules:
        validate_module(m)
        try:
            importlib.import_module(m)
        except ModuleNotFoundError as e:
            raise UsageError(f"cannot import module {m!r}: {e}") from None
        except Exception as e:
            raise UsageError(f"cannot import module {m!r}: {type(e).__name__}: {e}") from None


def resolve(target: str, modules: Sequence[str]) -> Callable[..., Any]:
    """The allowed target's function (see the module docstring)."""
    check_allowed(target, modules)
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:  # its module, or one it needs: no retry will help
        raise TargetNotFound(f"target {target!r}: cannot import {module_name!r}: {e}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise TargetNotFound(f"target {target!r}: module {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise TargetNotFound(f"target {target!r} is not callable")
    inner = getattr(fn, "fn", None) or getattr(fn, "__wrapped__", None) or fn  # Prefect flows
    defined_in = getattr(inner, "__module__", None)
    if not isinstance(defined_in, str) or not inside(defined_in, modules):
        raise TargetNotAllowed(
            f"target {target!r} is defined in {defined_in or 'an unknown module'}, outside "
            f"the modules this worker serves ({', '.join(modules)})"
        )
    return fn  # type: ignore[no-any-return]


class Resolver:
    """``resolve`` with a cache: a worker imports each target once."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = tuple(modules)
        self._cache: dict[str, Callable[..., Any]] = {}

    def __call__(self, target: str) -> Callable[..., Any]:
        fn = self._cache.get(target)
        if fn is None:
            fn = self._cache[target] = resolve(target, self.modules)
        return fn
