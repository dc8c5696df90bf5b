"""The text part of an HTML email comes from a plan made once per template (content/html_text.py); whatever the
template and the contact data, it is exactly html_to_text of the rendered HTML."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clarion.content import rendering
from clarion.content.html_text import html_to_text, plan_text
from clarion.content.rendering import EmailParts, build_context, render_email, render_html

# Values that try every way a rendered output could change the parse: markup, entities, half entities that
# meet the template's bare "&", quotes, whitespace runs, nothing at all.
VALUES = st.one_of(
    st.sampled_from(["", " ", "Ada", "  Ada  Lovelace ", "a\nb", "<b>bold</b>", "&amp;", "amp;", "lt;", "#39;",
                     '"quoted"', "'single'", "x > y", "Tom & Jerry", "https://shop.example/?a=1&b=2", "mailto:a@b.c",
                     "#top", "\u00e9t\u00e9", "-->", "]]>", "=", "/"]),
    st.text(alphabet=" <>&;\"'=/#abc\n", max_size=8),
)
OUTPUTS = st.sampled_from(["{{ v1 }}", "{{ v2 }}", "{{ v1 | upcase }}", '{{ v2 | default: "x&y" }}',
                           "{{ v1 | strip_html }}", "{{ v2 | escape }}", "{{ v1 | safe }}",
                           "{{ v2 | newline_to_br }}", '{{ v1 | append: "&amp;" }}'])
TEXT = st.sampled_from(["Hello ", " world", "Tom &amp; ", "Q&A ", "&lt;", "a < b ", "<", "&", "&#", "&copy",
                        "\n  ", "x", "", "2 > 1", '"', "'"])


@st.composite
def html_templates(draw: st.DrawFn) -> str:
    """HTML with outputs in text, in quoted and unquoted attribute values, and in places a plan must refuse."""
    parts: list[str] = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["text", "output", "open", "close", "a", "img", "br", "comment", "raw"]))
        if kind == "text":
            parts.append(draw(TEXT))
        elif kind == "output":
            parts.append(draw(OUTPUTS))
        elif kind == "open":
            parts.append(f"<{draw(st.sampled_from(['p', 'div', 'li', 'pre', 'td', 'style', 'title', 'b', 'ul']))}>")
        elif kind == "close":
            parts.append(f"</{draw(st.sampled_from(['p', 'div', 'li', 'pre', 'td', 'style', 'title', 'b', 'a']))}>")
        elif kind == "a":
            value = draw(st.one_of(TEXT, OUTPUTS, st.just("https://shop.example/x?a=1&amp;b=2")))
            quote = draw(st.sampled_from(['"', "'", ""]))
            parts.append(f"<a href={quote}{value}{quote}>")
        elif kind == "img":
            parts.append(f'<img alt="{draw(st.one_of(TEXT, OUTPUTS))}" src="x.png"/>')
        elif kind == "br":
            parts.append("<br>")
        elif kind == "comment":
            parts.append(f"<!-- {draw(st.one_of(TEXT, OUTPUTS))} -->")
        else:
            parts.append(draw(st.sampled_from(["<{{ v1 }}", "</{{ v2 }}>", "<p {{ v1 }}>", "<!DOCTYPE html>",
                                               "<?pi?>", "<![CDATA[x]]>", "</>", "<p title='{{ v1 }}' x=\"y\">"])))
    return "".join(parts)


def _rendered_text(source: str, v1: str, v2: str) -> tuple[str, str] | None:
    """(html_to_text of the rendered HTML, render_email's text) for one template and contact data."""
    try:
        rendering.compile_template(source, kind="html")
    except rendering.TemplateSyntaxError:
        return None
    context = {"v1": v1, "v2": v2}
    try:
        html = render_html(source, context)
    except rendering.RenderError:
        return None
    return html_to_text(html), render_email(EmailParts(subject="s", body_html=source), context).text


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=html_templates(), v1=VALUES, v2=VALUES)
@example(source='<p>Hi {{ v1 }}</p><a href="{{ v2 }}">{{ v2 }}</a>', v1="  Ada ", v2="https://x.test/?a=1&b=2")
@example(source="<p>Q&{{ v1 }}</p>", v1="amp;", v2="")
@example(source="<p>a <{{ v1 }} b</p>", v1="b", v2="")
@example(source="<p><a href={{ v1 }}>go</a></p>", v1="x onclick=y", v2="")
@example(source="<p title='{{ v1 }}'>{{ v2 | safe }}</p>", v1="it's", v2="<i>x</i>")
@example(source='<p><a href="{{ v1 }}">{{ v1 }}</a> <a href="{{ v2 }}">mail</a></p>', v1="https://x.test/",
         v2="mailto:mail")
@example(source='<p><a href="{{ v1 }}">{{ v2 }}</a> and <a href="{{ v1 }}">x</a></p>', v1="#top", v2=" ")
@example(source='<a href="{{ v1 }}">go<p>{{ v2 }}</a>', v1="https://x.test", v2="go")
@example(source='<p>x</p><a href="https://x.test">go<p>more</a>{{ v1 }}', v1="", v2="")
@example(source='<pre>{{ v1 }}\n  <a href="{{ v2 }}"> </a></pre><p>{{ v2 }}</p>', v1="  a  b ", v2="")
@example(source='<a href=\'>Hello <img alt="{{ v1 | safe }}" src="x.png"/>Hello ', v1="'", v2="")
def test_the_planned_text_is_html_to_text_of_the_rendered_html(source: str, v1: str, v2: str) -> None:
    texts = _rendered_text(source, v1, v2)
    if texts is not None:
        expected, got = texts
        assert got == expected


def test_a_newsletter_gets_a_plan_and_the_same_text_for_every_contact() -> None:
    source = ('<html><head><title>{{ campaign.name }}</title><style>p { color: red }</style></head><body>'
              '<h1>Hello {{ contact.first_name | default: "friend" }} &amp; welcome</h1>'
              '<p>In {{ contact.attributes.city }}:</p><ul><li>one</li><li>two &lt;3</li></ul>'
              '<p><a href="https://shop.example/?c={{ contact.attributes.city }}&amp;x=1">Shop</a> '
              "<a href='{{ unsubscribe_url }}'>{{ unsubscribe_url }}</a></p>"
              '<img src="x.png" alt="{{ contact.first_name }}"></body></html>')
    assert plan_text(source, piece_ok=lambda piece: True) is not None
    for first_name, city in [("Ada", "Paris"), ("", "S\u00e3o Paulo"), ("<Bob> & 'co'", "  Rome  "), (None, "a\nb")]:
        context = build_context({"first_name": first_name, "attributes": {"city": city}},
                                campaign={"name": "Spring"}, variables={},
                                unsubscribe_url="https://c.test/t/u/tok?a=1&b=2", view_in_browser_url="v")
        html = render_html(source, context)
        assert render_email(EmailParts(subject="s", body_html=source), context).text == html_to_text(html)


def test_a_plan_is_compiled_and_replays_its_calls_only_for_values_it_cannot_vouch_for(monkeypatch) -> None:
    """The plan's compiled form gives the text of a usual message without replaying the template's parse; a value
    that changes which lines or links there are (an empty label, an empty or "#" URL) is replayed."""
    source = ('<html><head><style>p { color: red }</style></head><body><h1>Hi {{ v1 | default: "friend" }}</h1>'
              '<p>Shop <a href="https://shop.example/">here</a>, in {{ v2 }}.</p>'
              '<p><a href="{{ v2 }}">{{ v1 }}</a></p><pre>{{ v1 }}  {{ v2 }}</pre></body></html>')
    plan = plan_text(source, piece_ok=rendering._is_html_template)
    assert plan is not None and plan.compiled
    replays = []
    replay = type(plan)._replay
    monkeypatch.setattr(type(plan), "_replay", lambda self, values: replays.append(values) or replay(self, values))
    for v1, v2 in [("Ada", "https://x.test/"), ("  Ada  L ", "mailto:Ada"), ("Ada", "Ada"), ("", "Rome"),
                   (" ", "https://x.test/"), ("Ada", ""), ("Ada", "#top")]:
        context = {"v1": v1, "v2": v2}
        text = plan.text(lambda pieces, context=context: render_html(pieces, context))
        assert text == html_to_text(render_html(source, context))
    # v1 "" and " " leave the last link without a label, v2 "" and "#top" hide it: those four are replayed
    assert [values[3] for values in replays] == ["", " ", "Ada", "Ada"]


def test_templates_beyond_a_plan_fall_back_to_parsing_each_message() -> None:
    for source in ["<p>{% if contact.first_name %}Hi{% endif %}</p>", "<p>{{- v1 }}</p>", "<!-- {{ v1 }} -->",
                   "<a href={{ v1 }}>x</a>", "<p>no template syntax</p>"]:
        assert plan_text(source, piece_ok=lambda piece: True) is None, source
