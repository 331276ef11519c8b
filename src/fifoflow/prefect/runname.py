"""Child flow run names from a template over the job's params (``--run-name``), such as
``"lr={lr}-bs={batch_size}"``.

The template is checked when the worker starts (``RunName(template)``): only ``{name}``
fields, optionally with a format spec (``{lr:.0e}``), naming params. A job whose params
(defaults of the target included) lack a field the template names cannot be named: the
attempt is ``dead`` at once, with the missing names in its error, since no retry would
bring the param.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from ..errors import NoRetry, UsageError

#: Longest name given to a flow run; longer renderings are cut with "...".
MAX_LENGTH = 200
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RunNameError(NoRetry):
    """A job's params do not fill the run name template (never retried)."""


class RunName:
    """A checked ``--run-name`` template."""

    def __init__(self, template: str) -> None:
        if not isinstance(template, str) or not template.strip():
            raise UsageError("--run-name must be a non-empty template such as 'lr={lr}'")
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as e:
            raise UsageError(f"invalid --run-name template {template!r}: {e}") from None
        fields: list[str] = []
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if not _FIELD.fullmatch(name):
                raise UsageError(
                    f"invalid --run-name template {template!r}: {{{name}}} is not a param "
                    "name (use {param} or {param:format})"
                )
            if spec and "{" in spec:
                raise UsageError(f"invalid --run-name template {template!r}: nested fields")
            if conversion not in (None, "r", "s"):  # pragma: no cover - parse refuses others
                raise UsageError(f"invalid --run-name template {template!r}")
            fields.append(name)
        self.template = template
        #: The param names it needs, in template order, without repeats.
        self.fields = tuple(dict.fromkeys(fields))

    def render(self, job_id: str, params: Mapping[str, Any]) -> str:
        """The run's name for these params (defaults included); ``RunNameError`` if a named
        param is missing or its value does not take the format spec."""
        missing = [f for f in self.fields if f not in params]
        if missing:
            have = ", ".join(sorted(params)) or "none"
            raise RunNameError(
                f"--run-name {self.template!r} names {', '.join(missing)}, which job "
                f"{job_id} does not have (its params: {have})"
            )
        try:
            name = self.template.format_map(params)
        except (ValueError, TypeError) as e:
            raise RunNameError(
                f"--run-name {self.template!r} does not format job {job_id}'s params: {e}"
            ) from None
        return name if len(name) <= MAX_LENGTH else name[: MAX_LENGTH - 3] + "..."
