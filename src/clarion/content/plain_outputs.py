"""A shortcut past python-liquid for the commonest templates: text and `{{ a.b.c }}` outputs, with or without
`| default: "…"`.

A campaign renders a subject, an HTML body and the text part's pieces for every message. python-liquid spends
~5 µs setting up each render and a few more per output (scope lookups, filter dispatch, the limited output
stream): ~20% of the send pipeline's CPU in bench/send_pipeline.py. A template made only of content and such
outputs, rendered with a context whose values on those paths are strings or null, gives exactly this output:
each output's string (HTML-escaped where the environment escapes), a null as nothing, and a null or empty
string replaced by the default's literal, which Liquid never escapes (a literal of the template is markup).
`render` answers None for anything else (a path that is missing or crosses something other than an object, a
value of another type, an output past the stream limit), and the caller renders with Liquid, which also raises
the errors. A hypothesis test holds this against Liquid itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from liquid import BoundTemplate
from liquid.builtin.content import ContentNode
from liquid.builtin.expressions.arguments import PositionalArgument
from liquid.builtin.expressions.filtered import FilteredExpression
from liquid.builtin.expressions.path import Path
from liquid.builtin.expressions.primitive import StringLiteral
from liquid.builtin.output import OutputNode
from markupsafe import escape

_MISSING = object()
_HTML_SPECIAL = re.compile("[&<>'\"]")  # what markupsafe.escape replaces


class PlainOutputs:
    """A template's nodes as literal text and (path, default) outputs."""

    __slots__ = ("_autoescape", "_limit", "_parts")

    def __init__(self, parts: list[str | tuple[tuple[str, ...], str | None]], *, autoescape: bool,
                 limit: int | None) -> None:
        self._parts = parts
        self._autoescape = autoescape
        self._limit = limit

    @classmethod
    def of(cls, template: BoundTemplate) -> PlainOutputs | None:
        """The shortcut for `template`, or None when it holds anything but content and plain outputs."""
        parts: list[str | tuple[tuple[str, ...], str | None]] = []
        for node in template.nodes:
            if type(node) is ContentNode:
                parts.append(node.text)
                continue
            if type(node) is not OutputNode:
                return None
            output = _plain_output(node)
            if output is None:
                return None
            parts.append(output)
        env = template.env
        return cls(parts, autoescape=bool(env.autoescape), limit=env.output_stream_limit)

    def names(self) -> frozenset[str]:
        """The context names the template reads (each output's first path segment)."""
        return frozenset(part[0][0] for part in self._parts if type(part) is not str)  # type: ignore[index]

    def render(self, context: Mapping[str, Any]) -> str | None:
        """The rendered text, or None when Liquid must render it (see the module)."""
        out: list[str] = []
        for part in self._parts:
            if type(part) is str:
                out.append(part)
                continue
            path, default = part  # type: ignore[misc]
            value: Any = context
            for key in path:
                if type(value) is not dict:
                    return None
                value = value.get(key, _MISSING)
                if value is _MISSING:
                    return None
            if value is None or value == "":
                out.append(default if default is not None else "")
            elif type(value) is str:
                # escape() wraps its answer in Markup (~1 µs): only a value that needs it pays for it.
                out.append(str(escape(value)) if self._autoescape and _HTML_SPECIAL.search(value) else value)
            else:
                return None
        text = "".join(out)
        if self._limit is not None and len(text) > self._limit:
            return None
        return text


def _plain_output(node: OutputNode) -> tuple[tuple[str, ...], str | None] | None:
    """(path, default literal or None) of `{{ a.b }}` / `{{ a.b | default: "x" }}`; None for any other output."""
    expression = node.expression
    if type(expression) is not FilteredExpression or type(expression.left) is not Path:
        return None
    path = expression.left.path
    if not path or not all(type(segment) is str for segment in path):
        return None
    filters = expression.filters or []
    if not filters:
        return tuple(path), None  # type: ignore[arg-type]
    if len(filters) != 1 or filters[0].name != "default":
        return None
    args = filters[0].args
    if len(args) != 1 or type(args[0]) is not PositionalArgument or type(args[0].value) is not StringLiteral:
        return None
    return tuple(path), args[0].value.value  # type: ignore[arg-type]
