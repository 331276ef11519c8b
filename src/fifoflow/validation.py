"""Input checks shared by the Python API and the CLI: bad input is refused before it is
sent (a push of many batches: before it becomes visible), so it never reaches, or
half-changes, a queue."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

from . import keys
from .errors import UsageError

TARGET_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
)
MAX_KEY_LENGTH = 512


def validate_target(target: object) -> str:
    if not isinstance(target, str) or not TARGET_RE.match(target):
        raise UsageError(f"invalid target {target!r}: expected 'package.module:function'")
    return target


def validate_module(module: object) -> str:
    if not isinstance(module, str) or not TARGET_RE.match(f"{module}:x"):
        raise UsageError(f"invalid module name {module!r}")
    return module


def validate_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not keys.valid_name(name):
        raise UsageError(f"invalid {kind} name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
    return name


def validate_key(key: object) -> str | None:
    """A de-duplication key: a non-empty string the server can store (valid UTF-8)."""
    if key is None:
        return None
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
        raise UsageError(f"key must be a non-empty string of at most {MAX_KEY_LENGTH} chars")
    try:
        key.encode()
    except UnicodeEncodeError:
        raise UsageError(f"key {key!r} is not valid text (it holds a lone surrogate)") from None
    return key


def validate_alias(alias: object) -> str | None:
    """A caller-chosen job id: printable, no spaces, no '/' or ',' (they separate ids)."""
    if alias is None:
        return None
    if not isinstance(alias, str) or not re.fullmatch(r"[^\s/,]{1,200}", alias):
        raise UsageError(f"invalid job id {alias!r}: 1-200 characters, no spaces, '/' or ','")
    if re.fullmatch(r"[0-9a-f]{18}", alias):
        raise UsageError(f"invalid job id {alias!r}: it looks like an id fifoflow makes")
    return alias


#: Exact types that need no further look (a bulk push checks millions of values).
_STR = frozenset({str})
_SCALARS = frozenset({str, int, float, bool, type(None)})
#: One encoder for every push: ``json.dumps`` with options builds a new one per call.
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def _one_encoder() -> Callable[[object], str]:
    """``_JSON.encode`` without its per-call set-up (a C encoder and a cycle-marker dict
    per call: half the time of encoding a small object). Without markers a cycle is a
    RecursionError, which ``encode_params`` reports as nesting too deep."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the _json accelerator
        return _JSON.encode
    encode = make(None, _JSON.default, json.encoder.encode_basestring, None, ":", ",",
                  False, False, False)  # fmt: skip
    return lambda obj: "".join(encode(obj, 0))


_encode = _one_encoder()


def validate_tags(tags: object) -> tuple[str, ...]:
    """A job's tags: up to 20 labels of 1-100 printable characters (Prefect shows them on
    the job's child flow runs). Duplicates are dropped, the order kept."""
    if tags is None:
        return ()
    if isinstance(tags, str) or not isinstance(tags, Sequence):
        raise UsageError(f"tags must be a list of strings, not {type(tags).__name__}")
    for tag in tags:
        if not isinstance(tag, str) or not re.fullmatch(r"[^\x00-\x1f\x7f]{1,100}", tag):
            raise UsageError(f"invalid tag {tag!r}: 1-100 printable characters")
    if len(set(tags)) > 20:
        raise UsageError(f"at most 20 tags a job, not {len(set(tags))}")
    return tuple(dict.fromkeys(tags))


def encode_params(params: object, max_bytes: int) -> str:
    """JSON object text of ``params``; never pickle. TypeError/ValueError name the problem."""
    if params is None:
        return "{}"
    if type(params) is not dict and not isinstance(params, Mapping):
        raise TypeError(f"params must be a JSON object (a dict), not {type(params).__name__}")
    if not _STR.issuperset(map(type, params)) and not all(isinstance(k, str) for k in params):
        raise TypeError("params keys must be strings (they become keyword arguments)")
    try:
        text = _encode(params)
        size = len(text) if text.isascii() else len(text.encode())
    except UnicodeEncodeError:
        raise ValueError("params are not valid text (they hold a lone surrogate)") from None
    except (TypeError, ValueError) as e:
        raise type(e)(f"params are not JSON: {e}") from None
    except RecursionError:
        raise ValueError("params are not JSON: nested too deeply (or circular)") from None
    _check_keys(params)
    if size > max_bytes:
        raise UsageError(f"params are {size} bytes of JSON; the limit is {max_bytes}")
    return text


def encode_many(params: Sequence[object], max_bytes: int, lazy_over: int) -> Sequence[str]:
    """The parameter sets encoded: at once, or, past ``lazy_over`` of them (a push of
    many batches), as they are read (``EncodedParams``)."""
    if len(params) > lazy_over:
        return EncodedParams(params, max_bytes)
    return [encode_params(p, max_bytes) for p in params]


class EncodedParams(Sequence[str]):
    """Parameter sets encoded as they are read (``encode_params``): a push of many batches
    encodes each batch while the server stages the one before. A bad set raises when its
    batch is read."""

    def __init__(self, params: Sequence[object], max_bytes: int) -> None:
        self.params, self.max_bytes = params, max_bytes

    def __len__(self) -> int:
        return len(self.params)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [encode_params(p, self.max_bytes) for p in self.params[i]]
        return encode_params(self.params[i], self.max_bytes)


def _check_keys(params: Mapping[str, Any]) -> None:
    """JSON would silently turn nested non-string keys into strings ({1: 2} -> {"1": 2}),
    so the target would get other params than were pushed: refuse them. Runs after a
    successful dump, so the structure is finite and acyclic."""
    stack: list[object] = [v for v in params.values() if type(v) not in _SCALARS]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            if not all(isinstance(k, str) for k in value):
                raise TypeError("params keys must be strings at every level, as JSON has them")
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)


def integer(name: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise UsageError(f"{name} must be >= {minimum}, not {value}")
    return value


def seconds(name: str, value: object, *, allow_zero: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)
