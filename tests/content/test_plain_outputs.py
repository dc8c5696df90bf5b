"""The shortcut past python-liquid for plain templates (content.plain_outputs) gives exactly Liquid's output, for
HTML and text templates alike, or steps aside (None) wherever Liquid would do anything else, errors included."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from liquid.exceptions import LiquidError

from clarion.content import rendering
from clarion.content.plain_outputs import PlainOutputs

NAMES = ["contact", "first_name", "attributes", "city", "size", "first", "unsubscribe_url", "x"]
TRICKY = st.text(alphabet=["a", "<", ">", "&", "'", '"', " ", "é", "\n", "{", "}", "%"], max_size=6)

# Mostly what the shortcut takes (strings, null), sometimes what it leaves to Liquid.
leaves = st.one_of(st.none(), TRICKY, TRICKY, TRICKY, TRICKY, TRICKY, TRICKY,
                   st.integers(-2, 2) | st.floats(allow_nan=False, width=16) | st.booleans() | st.lists(TRICKY, max_size=2))
contexts = st.dictionaries(st.sampled_from(NAMES), st.recursive(
    leaves, lambda inner: st.dictionaries(st.sampled_from(NAMES), inner, min_size=1, max_size=3), max_leaves=8),
    min_size=1, max_size=4)
default_literals = st.text(alphabet=["a", "<", "&", "'", " ", "é"], max_size=5)


def _leaf_paths(context: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    found = []
    for key, value in context.items():
        if isinstance(value, dict):
            found += _leaf_paths(value, (*prefix, key))
        else:
            found.append(".".join((*prefix, key)))
    return found


@st.composite
def templates_and_contexts(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A context, and a template whose outputs mostly name paths it has (some it lacks, some other syntax)."""
    context = draw(contexts)
    # Mostly paths to its values; sometimes to an object of it, or to nothing.
    any_path = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(".".join)
    paths = st.sampled_from(_leaf_paths(context)) if draw(st.integers(0, 9)) else any_path
    output = st.one_of(
        paths.map(lambda p: "{{ " + p + " }}"),
        st.tuples(paths, default_literals).map(lambda pd: "{{ " + pd[0] + ' | default: "' + pd[1] + '" }}'),
        paths.map(lambda p: "{{- " + p + " -}}"),
    )
    if not draw(st.integers(0, 9)):  # now and then something only Liquid renders
        output = output | paths.map(lambda p: "{{ " + p + " | upcase }}") | st.just("{% if x %}y{% endif %}")
    text = TRICKY.filter(lambda t: "{" not in t and "%" not in t)
    pieces = draw(st.lists(st.one_of(text, output, output), min_size=1, max_size=5))
    return "".join(pieces), context


def _liquid(kind: rendering.Kind, source: str, context: dict[str, Any]) -> str | type[Exception]:
    try:
        return rendering.compile_template(source, kind=kind).render(**context)
    except LiquidError as exc:
        return type(exc)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(["html", "text"]), templates_and_contexts())
@example("html", ('Hi {{ contact.first_name | default: "<friend>" }} & {{ unsubscribe_url }}',
                  {"contact": {"first_name": "<b>Ann & Bo</b>"}, "unsubscribe_url": "https://x.test/u?a=1&b=2"}))
@example("html", ('Hi {{ contact.first_name | default: "<friend>" }}', {"contact": {"first_name": None}}))
@example("text", ("{{ contact.size }} {{ contact.first }}", {"contact": {"size": "L", "first": "Ann"}}))
@example("text", ("{{ contact.size }}", {"contact": {"first": "Ann"}}))
def test_the_shortcut_renders_exactly_what_liquid_renders_or_steps_aside(
        kind: rendering.Kind, case: tuple[str, dict[str, Any]]) -> None:
    source, context = case
    try:
        template = rendering.compile_template(source, kind=kind)
    except rendering.TemplateSyntaxError:
        return
    shortcut = PlainOutputs.of(template)
    if shortcut is None:
        return
    text = shortcut.render(context)
    if text is not None:
        assert text == _liquid(kind, source, context)


def test_a_campaigns_usual_template_takes_the_shortcut_and_odd_ones_do_not() -> None:
    context = {"contact": {"first_name": "Ann", "attributes": {"city": 3}}, "unsubscribe_url": "https://u.test/1"}
    usual = rendering.compile_template('Hi {{ contact.first_name | default: "friend" }}: {{ unsubscribe_url }}',
                                       kind="html")
    shortcut = PlainOutputs.of(usual)
    assert shortcut is not None and shortcut.render(context) == "Hi Ann: https://u.test/1"
    # A number on the path, a missing name: Liquid renders (and for the missing name, refuses).
    assert PlainOutputs.of(rendering.compile_template("{{ contact.attributes.city }}")).render(context) is None
    assert PlainOutputs.of(rendering.compile_template("{{ nobody }}")).render(context) is None
    assert rendering.render_text("{{ contact.attributes.city }}", context) == "3"
    assert PlainOutputs.of(rendering.compile_template("{{ contact.first_name | upcase }}")) is None
    assert PlainOutputs.of(rendering.compile_template("{% if x %}y{% endif %}")) is None
