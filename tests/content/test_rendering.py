"""The pure rendering API the send pipeline calls: no database, no HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from markupsafe import Markup

from clarion.content import rendering
from clarion.content.rendering import (
    EmailParts,
    RenderError,
    TemplateSyntaxError,
    build_context,
    html_to_text,
    render_email,
    render_html,
    render_text,
)
from clarion.kit.sms import sms_segments


def context(contact: dict | None = None, **variables: object) -> dict:
    return build_context(contact or {"first_name": "Ada"}, campaign={"name": "Spring", "id": "c1"},
                         variables=variables, unsubscribe_url="https://c.test/t/u/x",
                         view_in_browser_url="https://c.test/t/v/x")


def test_context_holds_only_plain_data() -> None:
    contact_id = uuid.uuid4()
    ctx = build_context({"id": contact_id, "email": "a@example.com", "attributes": {"joined": datetime(2024, 1, 2,
                                                                                                      tzinfo=UTC)}},
                        campaign=None, variables={}, unsubscribe_url="u", view_in_browser_url="v")
    assert ctx["contact"]["id"] == str(contact_id)
    assert ctx["contact"]["attributes"]["joined"] == "2024-01-02T00:00:00+00:00"
    assert ctx["contact"]["first_name"] is None and ctx["contact"]["tags"] == []
    assert set(ctx) == {"contact", "campaign", "unsubscribe_url", "view_in_browser_url"}
    with pytest.raises(TypeError, match="campaign.owner: object is not plain data"):
        build_context({}, campaign={"owner": object()}, variables={}, unsubscribe_url="u", view_in_browser_url="v")
    with pytest.raises(TypeError, match=r"contact.attributes.kids\[1\].pet: object is not plain data"):
        build_context({"attributes": {"kids": [{"pet": "cat"}, {"pet": object()}]}}, campaign=None, variables={},
                      unsubscribe_url="u", view_in_browser_url="v")
    # Markup is a str, but reaches a template as plain text: autoescaping still applies to it.
    ctx = build_context({"first_name": Markup("<b>Ada</b>"), "tags": ("a", "b")}, campaign=None, variables={},
                        unsubscribe_url="u", view_in_browser_url="v")
    assert type(ctx["contact"]["first_name"]) is str and ctx["contact"]["tags"] == ["a", "b"]
    assert render_html("{{ contact.first_name }}", ctx) == "&lt;b&gt;Ada&lt;/b&gt;"


def test_may_read_is_false_only_when_no_template_can_name_the_value() -> None:
    plain_parts = [("text", "Hi {{ contact.first_name }}"), ("html", '<a href="{{ unsubscribe_url }}">x</a>'),
                   ("html", None)]
    assert not rendering.may_read("view_in_browser_url", plain_parts)
    assert rendering.may_read("unsubscribe_url", plain_parts)
    for reader in ['<a href="{{ view_in_browser_url | default: "#" }}">web</a>',
                   '{% assign v = "view_in_browser_url" %}{{ [v] }}', "{{ view_in_browser_url | upcase }}",
                   "{% if x %}{% endif %}", "{{ broken"]:
        assert rendering.may_read("view_in_browser_url", [*plain_parts, ("html", reader)]), reader


def test_defaults_fill_only_missing_values() -> None:
    ctx = context({"first_name": "Ada", "attributes": {"city": None, "tier": "gold"}},
                  **{"contact.attributes.city": "your town", "contact.attributes.tier": "member", "promo": "P1"})
    assert ctx["contact"]["attributes"] == {"city": "your town", "tier": "gold"}
    assert render_text("{{ promo }} {{ contact.attributes.city }}", ctx) == "P1 your town"


def test_undefined_message_names_field_line_and_variable() -> None:
    with pytest.raises(RenderError) as caught:
        render_html("<p>\n\n{{ contact.attributes.city }}</p>", context(), field="body_html")
    assert str(caught.value) == "body_html line 3: 'contact.attributes.city' is undefined"
    assert caught.value.field == "body_html" and caught.value.line == 3


def test_default_filter_works_for_missing_and_empty_values() -> None:
    ctx = context({"first_name": ""})
    assert render_text("{{ contact.first_name | default: 'friend' }} {{ nope | default: 'x' }}", ctx) == "friend x"


@pytest.mark.parametrize("probe", [
    "{{ contact.__class__ }}", "{{ contact.__class__.__mro__ }}", "{{ settings }}", "{{ environ }}",
    "{{ contact.attributes.keys }}", "{{ contact.tags.append }}", "{{ contact.first_name.__len__ }}",
    "{{ unsubscribe_url.format }}", "{{ campaign.__init__.__globals__ }}",
])
def test_sandbox_gives_no_python_objects(probe: str) -> None:
    with pytest.raises(RenderError, match="is undefined"):
        render_text(probe, context())


@pytest.mark.parametrize("source", ["{% include 'x' %}", "{% render 'x' %}", "{% render 'x' with contact %}"])
def test_sandbox_has_no_loader_tags(source: str) -> None:
    with pytest.raises(TemplateSyntaxError, match="unexpected tag"):
        rendering.compile_template(source)


def test_loops_are_bounded() -> None:
    with pytest.raises(RenderError, match="loop iteration limit"):
        render_text("{% for i in (1..1000000) %}{% for j in (1..1000) %}x{% endfor %}{% endfor %}", context())


def test_same_source_is_parsed_once() -> None:
    rendering.clear_template_cache()
    source = "Hi {{ contact.first_name }} ({{ campaign.name }})"
    outputs = {render_text(source, context({"first_name": f"user{i}"})) for i in range(1000)}
    assert len(outputs) == 1000
    info = rendering.template_cache_info()
    assert (info.misses, info.hits) == (1, 999)


def test_syntax_error_position() -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        rendering.compile_template("a\nb\n{{ x | }}", field="body_text")
    assert caught.value.line == 3 and str(caught.value).startswith("body_text line 3:")
    with pytest.raises(TemplateSyntaxError, match=r"subject line 1: .*endif.*end of template"):
        rendering.compile_template("{% if x %}never closed", field="subject")
    with pytest.raises(TemplateSyntaxError, match=r"body_html line 2"):
        rendering.compile_template("ok\n{{ x }", field="body_html")


def test_render_email_assembles_inlines_and_generates_text() -> None:
    parts = EmailParts(subject="Hello {{ contact.first_name }}\r\nBcc: victim@example.com",
                       header_html="<style>p { color: red } @media (max-width: 600px) { p { color: blue } }</style>",
                       body_html="<p>Hi {{ contact.first_name }}</p>",
                       footer_html='<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>')
    email = render_email(parts, context())
    assert email.subject == "Hello Ada Bcc: victim@example.com"  # one line: no header injection
    assert email.html is not None
    assert '<p style="color: red;">Hi Ada</p>' in email.html
    assert "@media" in email.html  # media queries cannot be inlined, so they stay in a style tag
    assert email.text == "Hi Ada\n\nUnsubscribe (https://c.test/t/u/x)\n"


def test_remote_stylesheets_are_not_loaded() -> None:
    html = rendering.inline_css('<link rel="stylesheet" href="http://192.0.2.1/x.css"><p>x</p>')
    assert "<p>x</p>" in html


def test_text_email_without_html() -> None:
    email = render_email(EmailParts(subject="S", body_text="Hi {{ contact.first_name }}"), context())
    assert (email.html, email.text) == (None, "Hi Ada")


def test_html_to_text_is_readable() -> None:
    html = ("<html><head><title>ignored</title><style>p{}</style></head><body>"
            "<h1>Title &amp; more</h1><p>One   line<br/>two&nbsp;lines &lt;ok&gt;</p>"
            "<ul><li>first</li><li>second</li></ul>"
            "<p><a href=\"https://x.io\">https://x.io</a> and <a href=\"mailto:a@b.io\">a@b.io</a> and "
            "<a href=\"https://y.io/p?q=1\">Y</a></p><script>alert(1)</script></body></html>")
    assert html_to_text(html) == ("Title & more\n\nOne line\ntwo lines <ok>\n\n- first\n- second\n\n"
                                  "https://x.io and a@b.io and Y (https://y.io/p?q=1)\n")


@pytest.mark.parametrize(("text", "expected"), [
    ("", (1, "GSM-7")),
    ("a" * 160, (1, "GSM-7")),
    ("a" * 161, (2, "GSM-7")),
    ("a" * 306, (2, "GSM-7")),
    ("a" * 307, (3, "GSM-7")),
    ("€" * 80, (1, "GSM-7")),
    ("€" * 81, (2, "GSM-7")),
    ("a" * 152 + "€" + "a" * 10, (2, "GSM-7")),  # the escape pair moves whole into the second part
    ("😀", (1, "UCS-2")),
    ("ж" * 70, (1, "UCS-2")),
    ("ж" * 71, (2, "UCS-2")),
    ("ж" * 134, (2, "UCS-2")),
    ("ж" * 135, (3, "UCS-2")),
    ("😀" * 35, (1, "UCS-2")),
    ("😀" * 36, (2, "UCS-2")),
])
def test_sms_segments(text: str, expected: tuple[int, str]) -> None:
    assert sms_segments(text) == expected


def test_extension_character_never_straddles_parts() -> None:
    # 306 septets would fill two parts exactly, but the escape pair cannot be split at septet 153.
    assert sms_segments("a" * 152 + "€" + "a" * 152) == (3, "GSM-7")


def test_missing_value_is_false_in_conditions() -> None:
    source = "{% if contact.attributes.vip %}VIP{% else %}member{% endif %}{% unless nope %}!{% endunless %}"
    assert render_text(source, context()) == "member!"
    assert render_text(source, context({"attributes": {"vip": True}})) == "VIP!"
