"""Load the Lua scripts once per client; redis-py calls them by SHA and reloads them
after a server restart (NOSCRIPT)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

NAMES = ("push", "claim", "complete", "extend", "release", "maintain", "cancel", "requeue", "purge")


@cache
def source(name: str) -> str:
    """The script's own file with the shared helpers of ``_common.lua`` in front of it."""
    folder = resources.files("fifoflow") / "scripts"
    return (folder / "_common.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


class Scripts:
    """The registered scripts of one client, as attributes: ``scripts.push(keys, args)``."""

    def __init__(self, client: redis.Redis) -> None:
        self._scripts: dict[str, Script] = {n: client.register_script(source(n)) for n in NAMES}

    def __getattr__(self, name: str) -> Script:
        try:
            return self._scripts[name]
        except KeyError:
            raise AttributeError(name) from None
