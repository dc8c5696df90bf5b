"""Rendering of user templates: pure functions, no database, safe for the send pipeline to call per recipient.

A template sees only the plain JSON-like context built here (dicts, lists, strings, numbers, booleans, None):
no settings, no environment, no Python objects, no loader, so `include` / `render` do not exist. Parsed
templates are cached by source text, so one template rendered for many contacts is parsed once.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

import css_inline
from liquid import BoundTemplate, Environment, FalsyStrictUndefined
from liquid.environment import get_parser
from liquid.exceptions import LiquidError, UndefinedError
from liquid.stream import TokenStream
from markupsafe import Markup

from clarion.content.html_text import TextPlan, html_to_text, plan_text
from clarion.content.plain_outputs import PlainOutputs

CONTACT_FIELDS = ("email", "phone", "first_name", "last_name", "locale", "timezone")
# telegram_start_url: the contact's Telegram deep link, given when the tenant has a bot (delivery.compose).
RESERVED_NAMES = ("contact", "campaign", "unsubscribe_url", "view_in_browser_url", "telegram_start_url")
TEMPLATE_CACHE_SIZE = 2048

Kind = Literal["html", "text"]


class RenderError(Exception):
    """A template that cannot be parsed or rendered; `field` and `line` say where."""

    def __init__(self, field: str, message: str, line: int | None = None,
                 loc: tuple[str | int, ...] | None = None) -> None:
        self.field = field
        self.line = line
        self.message = message
        self.loc = loc or (field,)
        where = f"{field} line {line}" if line else field
        super().__init__(f"{where}: {message}")


class TemplateSyntaxError(RenderError):
    """Liquid source that does not parse; raised when a template is saved."""


class MissingValue(FalsyStrictUndefined):
    """What a template gets for a name its context lacks: output fails with the name (so a message never goes out
    with a hole in it), while `{% if %}` tests it as false and the `default` filter replaces it."""

    force_liquid_default = True


class _SandboxedEnvironment(Environment):
    # Templates are written by tenants; bound the work one render may do.
    loop_iteration_limit = 100_000
    output_stream_limit = 5_000_000
    local_namespace_limit = 1_000_000


def _environment(*, autoescape: bool) -> Environment:
    env = _SandboxedEnvironment(undefined=MissingValue, autoescape=autoescape, strict_filters=True)
    # These tags would read other templates through a loader; a tenant's template has no business doing so.
    for tag in ("include", "render"):
        env.tags.pop(tag, None)
    return env


# HTML parts escape contact data (a first name of "<script>" stays text); subjects and text parts do not.
_ENVIRONMENTS: dict[str, Environment] = {"html": _environment(autoescape=True), "text": _environment(autoescape=False)}


def _line_of(source: str, index: int) -> int:
    return source.count("\n", 0, max(index, 0)) + 1


def _parse(env: Environment, source: str) -> BoundTemplate:
    """Parse like Environment.from_string, but keep the template's own token stream so an error whose
    token has no position (an expression cut short, a block never closed) can still be given a line."""
    try:
        stream = TokenStream(env.tokenizer()(source))
    except LiquidError as exc:
        raise _located(exc, source, None) from exc
    try:
        nodes = get_parser(env).parse(stream)
    except LiquidError as exc:
        raise _located(exc, source, stream) from exc
    return env.template_class(env=env, name="", path=None, nodes=nodes, globals=env.make_globals(None), matter=None)


class _LocatedSyntaxError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _located(exc: LiquidError, source: str, stream: TokenStream | None) -> _LocatedSyntaxError:
    message = str(exc.message)
    token = exc.token
    if token is not None and token.start_index >= 0:
        return _LocatedSyntaxError(_line_of(source, token.start_index), message)
    if stream is not None:
        if stream.pos < len(stream.tokens) and stream.tokens[stream.pos].start_index >= 0:
            return _LocatedSyntaxError(_line_of(source, stream.tokens[stream.pos].start_index), message)
        # The parser ran off the end of the template: an unclosed block.
        return _LocatedSyntaxError(source.count("\n") + 1, message.replace("end of expression", "end of template"))
    return _LocatedSyntaxError(1, message)


@lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def _compiled(kind: Kind, source: str) -> BoundTemplate:
    return _parse(_ENVIRONMENTS[kind], source)


def compile_template(source: str, *, kind: Kind = "text", field: str = "template",
                     loc: tuple[str | int, ...] | None = None) -> BoundTemplate:
    """The parsed template for `source` (cached). Raises TemplateSyntaxError naming `field` and the line."""
    try:
        return _compiled(kind, source)
    except _LocatedSyntaxError as exc:
        raise TemplateSyntaxError(field, exc.message, exc.line, loc) from None


def template_cache_info() -> Any:
    """hits / misses / currsize of the parsed-template cache (functools.lru_cache statistics)."""
    return _compiled.cache_info()


def clear_template_cache() -> None:
    _compiled.cache_clear()
    _plain_outputs.cache_clear()


# --- context ---------------------------------------------------------------------------------------------

def plain(value: Any, *, where: str = "context") -> Any:
    """A JSON-like copy of `value`. Ids and dates become strings; anything else that is not plain data is refused,
    so no Python object (and none of its attributes) ever reaches a template."""
    try:
        return _plain(value)
    except _NotPlain as exc:
        location = where + "".join(reversed(exc.path))
        raise TypeError(f"{location}: {exc.kind} is not plain data and cannot be given to a template") from None


class _NotPlain(Exception):
    """Raised from deep inside a value; each level it passes adds its key, so the location costs nothing until
    a value is refused."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.path: list[str] = []


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, Markup):
        return str(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        copy = {}
        for key, item in value.items():
            try:
                copy[str(key)] = item if type(item) in _SCALARS else _plain(item)
            except _NotPlain as exc:
                exc.path.append(f".{key}")
                raise
        return copy
    if isinstance(value, (list, tuple)):
        items = []
        for i, item in enumerate(value):
            try:
                items.append(item if type(item) in _SCALARS else _plain(item))
            except _NotPlain as exc:
                exc.path.append(f"[{i}]")
                raise
        return items
    raise _NotPlain(type(value).__name__)


def _apply_default(context: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted `path` to `value` where the context has nothing (missing or null) there."""
    *parents, leaf = path.split(".")
    node: Any = context
    for name in parents:
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            return  # the path runs through a value that is not an object: the data wins over the default
        node = child
    if node.get(leaf) is None:
        node[leaf] = plain(value, where=path)


def build_context(contact: Mapping[str, Any], *, campaign: Mapping[str, Any] | None, variables: Mapping[str, Any],
                  unsubscribe_url: str, view_in_browser_url: str) -> dict[str, Any]:
    """The whole world a template sees. `contact` is a contact-like dict (fields, tags, attributes); `variables`
    maps a name (`promo_code`) or a dotted path (`contact.attributes.city`) to the default used when the data
    has no value there."""
    contact_view: dict[str, Any] = {"id": plain(contact.get("id"))}
    for field in CONTACT_FIELDS:
        value = contact.get(field)
        contact_view[field] = value if type(value) in _SCALARS else plain(value, where=f"contact.{field}")
    tags, attributes = contact.get("tags") or [], contact.get("attributes") or {}
    contact_view["tags"] = plain(tags if isinstance(tags, (list, tuple)) else list(tags), where="contact.tags")
    contact_view["attributes"] = plain(attributes if isinstance(attributes, Mapping) else dict(attributes),
                                       where="contact.attributes")
    context: dict[str, Any] = {
        "contact": contact_view,
        "campaign": plain(campaign or {}, where="campaign"),
        "unsubscribe_url": str(unsubscribe_url),
        "view_in_browser_url": str(view_in_browser_url),
    }
    for name, value in variables.items():
        _apply_default(context, name, value)
    return context


def contact_payload(contact: Any) -> dict[str, Any]:
    """The contact-like dict build_context takes, read from anything with contact attributes (an ORM row)."""
    payload = {field: getattr(contact, field, None) for field in CONTACT_FIELDS}
    payload["id"] = getattr(contact, "id", None)
    payload["tags"] = list(getattr(contact, "tags", None) or [])
    payload["attributes"] = dict(getattr(contact, "attributes", None) or {})
    return payload


# --- rendering -------------------------------------------------------------------------------------------

_UNDEFINED = re.compile(r"^'?(?P<name>[^'\s]+)'? is undefined$")


@lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def _plain_outputs(template: BoundTemplate) -> PlainOutputs | None:
    return PlainOutputs.of(template)


def _render(source: str, context: Mapping[str, Any], *, kind: Kind, field: str,
            loc: tuple[str | int, ...] | None = None) -> str:
    template = compile_template(source, kind=kind, field=field, loc=loc)
    shortcut = _plain_outputs(template)
    if shortcut is not None and (text := shortcut.render(context)) is not None:
        return text
    try:
        return template.render(**context)
    except LiquidError as exc:
        message = str(exc.message)
        if isinstance(exc, UndefinedError) and (match := _UNDEFINED.match(message)):
            message = f"'{match['name']}' is undefined"
        token = exc.token
        line = _line_of(source, token.start_index) if token is not None and token.start_index >= 0 else None
        raise RenderError(field, message, line, loc) from None


def may_read(name: str, sources: Iterable[tuple[Kind, str | None]]) -> bool:
    """Whether any of the templates could read context name `name`: False only when each is plain outputs (see
    plain_outputs) and none names it, since anything else (tags, filters, a bracketed lookup) could."""
    for kind, source in sources:
        if not source:
            continue
        try:
            shortcut = _plain_outputs(compile_template(source, kind=kind))
        except TemplateSyntaxError:
            return True
        if shortcut is None or name in shortcut.names():
            return True
    return False


def render_text(source: str, context: Mapping[str, Any], *, field: str = "body_text") -> str:
    """Render plain-text Liquid (SMS, Telegram, push, subjects): nothing is HTML-escaped."""
    return _render(source, context, kind="text", field=field)


def render_html(source: str, context: Mapping[str, Any], *, field: str = "body_html") -> str:
    """Render HTML Liquid: values from the context are HTML-escaped."""
    return _render(source, context, kind="html", field=field)


@dataclass(frozen=True)
class EmailParts:
    subject: str
    body_html: str | None = None
    body_text: str | None = None
    header_html: str | None = None
    footer_html: str | None = None


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str | None
    text: str


# Remote stylesheets are never fetched: rendering must not reach the network on a tenant's say-so.
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


def inline_css(html: str) -> str:
    return _INLINER.inline(html)


def render_email(parts: EmailParts, context: Mapping[str, Any]) -> RenderedEmail:
    """Subject, HTML (header + body + footer, CSS inlined) and a text part (generated from the HTML when the
    template has none)."""
    subject = " ".join(render_text(parts.subject, context, field="subject").split())  # no header injection
    html_fields = (("header_html", parts.header_html), ("body_html", parts.body_html),
                   ("footer_html", parts.footer_html))
    rendered_html = "".join(render_html(source, context, field=name) for name, source in html_fields if source)
    html = inline_css(rendered_html) if parts.body_html else None
    if parts.body_text:
        text = render_text(parts.body_text, context, field="body_text")
    else:
        text = _text_of_html(tuple(source for _, source in html_fields if source), rendered_html, context)
    return RenderedEmail(subject=subject, html=html, text=text)


def _text_of_html(sources: tuple[str, ...], rendered_html: str, context: Mapping[str, Any]) -> str:
    """html_to_text(rendered_html), through the sources' TextPlan when they have one (the same text, without
    parsing each message's HTML)."""
    plan = _text_plan(sources)
    if plan is not None:
        try:
            text = plan.text(lambda pieces: render_html(pieces, context))
        except RenderError:
            text = None  # the HTML rendered, so this cannot happen short of a limit; parse as before
        if text is not None:
            return text
    return html_to_text(rendered_html)


def _is_html_template(piece: str) -> bool:
    try:
        compile_template(piece, kind="html")
    except TemplateSyntaxError:
        return False
    return True


@lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def _text_plan(sources: tuple[str, ...]) -> TextPlan | None:
    # The parts render separately and are joined; with outputs only (all a plan allows), that is the rendering
    # of the joined sources.
    return plan_text("".join(sources), piece_ok=_is_html_template)


def render_whatsapp_components(components: Iterable[Mapping[str, Any]], context: Mapping[str, Any]) -> list[Any]:
    """Cloud API components with every string inside each parameter rendered as Liquid (text, links, payloads)."""
    rendered = []
    for c_index, component in enumerate(components):
        out = dict(component)
        params = component.get("parameters") or []
        out["parameters"] = [_render_parameter(param, context, ("components", c_index, "parameters", p_index))
                             for p_index, param in enumerate(params)]
        rendered.append(out)
    return rendered


def _render_parameter(value: Any, context: Mapping[str, Any], loc: tuple[str | int, ...]) -> Any:
    if isinstance(value, str):
        if "{" not in value:
            return value
        return _render(value, context, kind="text", field=_loc_name(loc), loc=("whatsapp", *loc))
    if isinstance(value, Mapping):
        return {key: item if key == "type" else _render_parameter(item, context, (*loc, key))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_render_parameter(item, context, (*loc, i)) for i, item in enumerate(value)]
    return value


def _loc_name(loc: tuple[str | int, ...]) -> str:
    name = "whatsapp"
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def whatsapp_liquid_sources(components: Iterable[Mapping[str, Any]]) -> list[tuple[tuple[str | int, ...], str]]:
    """Every string inside the components' parameters, with where it sits, for checking at save time."""
    found: list[tuple[tuple[str | int, ...], str]] = []

    def walk(value: Any, loc: tuple[str | int, ...]) -> None:
        if isinstance(value, str):
            found.append((loc, value))
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if key != "type":
                    walk(item, (*loc, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*loc, i))

    for c_index, component in enumerate(components):
        walk(component.get("parameters") or [], ("components", c_index, "parameters"))
    return found


def whatsapp_syntax_errors(components: Iterable[Mapping[str, Any]]) -> list[TemplateSyntaxError]:
    """Every Liquid syntax error in the components' parameters (each with its `loc`), for checking at save time."""
    errors = []
    for loc, source in whatsapp_liquid_sources(components):
        try:
            compile_template(source, kind="text", field=_loc_name(loc), loc=("whatsapp", *loc))
        except TemplateSyntaxError as exc:
            errors.append(exc)
    return errors

