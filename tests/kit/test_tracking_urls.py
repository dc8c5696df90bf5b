"""Tracked links: signed URLs, which links are tracked, rewriting that changes nothing else, the pixel."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.kit import tracking_urls as t

SECRET = "install-secret-" + "s" * 40
BASE = "https://mail.shop.example/"

HTML = """<html><body>
<a href="https://shop.example/sale?utm=mail&amp;x=1">Sale</a>
<a data-clarion-notrack href="https://shop.example/private">private</a>
<!-- <a href="https://shop.example/in-comment">hidden</a> -->
<a href='mailto:help@shop.example'>mail us</a> <a href="tel:+15551234">call</a> <a href="#top">top</a>
<a class=btn href=https://shop.example/sale?utm=mail&amp;x=1>Sale again</a>
<a href="https://mail.shop.example/t/u/n1.abcdef">Unsubscribe</a>
<A HREF="HTTP://Shop.Example/Upper" target="_blank">upper</A>
<a href="/relative">relative</a>
</body></html>"""


def test_urls_name_their_endpoint_and_verify_only_for_their_purpose() -> None:
    opened = t.open_url(BASE, SECRET, 42)
    clicked = t.click_url(BASE, SECRET, 42, 7)
    unsub = t.unsubscribe_url(BASE, SECRET, 42)
    assert opened.startswith("https://mail.shop.example/t/o/") and opened.endswith(".gif")
    assert clicked.startswith("https://mail.shop.example/t/c/")
    assert unsub.startswith("https://mail.shop.example/t/u/")
    open_token = opened.rsplit("/", 1)[1].removesuffix(".gif")
    click_token = clicked.rsplit("/", 1)[1]
    assert t.parse_token(SECRET, "open", open_token) == (42,)
    assert t.parse_token(SECRET, "click", click_token) == (42, 7)
    assert t.parse_token(SECRET, "unsub", unsub.rsplit("/", 1)[1]) == (42,)
    assert t.parse_token(SECRET, "click", open_token) is None
    assert t.parse_token(SECRET, "unsub", open_token) is None
    assert t.parse_token("another-install-secret-" + "z" * 30, "click", click_token) is None
    tampered = click_token.replace("n7.", "n8.")
    assert tampered != click_token and t.parse_token(SECRET, "click", tampered) is None


def test_extract_links_keeps_document_order_and_leaves_untrackable_links_alone() -> None:
    assert t.extract_links(HTML) == ["https://shop.example/sale?utm=mail&x=1", "HTTP://Shop.Example/Upper"]
    assert t.extract_links(HTML, skip=["HTTP://Shop.Example/Upper"]) == ["https://shop.example/sale?utm=mail&x=1"]


def test_rewrite_links_changes_only_registered_hrefs() -> None:
    rewritten = t.rewrite_links(HTML, {"https://shop.example/sale?utm=mail&x=1": 5}, base_url=BASE,
                                secret=SECRET, recipient_id=42)
    tracked = t.click_url(BASE, SECRET, 42, 5)
    assert rewritten.count(f'href="{tracked}"') == 2
    assert "shop.example/sale" not in rewritten
    for untouched in ('data-clarion-notrack href="https://shop.example/private"', "in-comment", "mailto:help",
                      'href="tel:+15551234"', 'href="#top"', "/t/u/n1.abcdef", 'HREF="HTTP://Shop.Example/Upper"',
                      'class=btn href="', 'href="/relative"'):
        assert untouched in rewritten
    assert rewritten.replace(f'href="{tracked}"', "") == HTML.replace(
        'href="https://shop.example/sale?utm=mail&amp;x=1"', "").replace(
        "href=https://shop.example/sale?utm=mail&amp;x=1", "")


def test_the_open_pixel_goes_before_the_last_body_close_or_at_the_end() -> None:
    pixel_url = t.open_url(BASE, SECRET, 42)
    with_body = t.add_open_pixel("<html><body><p>Hi</p></BODY></html>", pixel_url)
    assert with_body.startswith("<html><body><p>Hi</p><img src=\"" + pixel_url)
    assert with_body.endswith('/></BODY></html>') and 'width="1" height="1"' in with_body
    assert t.add_open_pixel("<p>fragment</p>", pixel_url).startswith("<p>fragment</p><img ")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["</body>", "</BODY >", "</Body\n\t>", "</bodyx>", "</body", "<body>", ">", "p",
                                 " ", "\u0130", "\u00e9", "</b"]), max_size=12).map("".join))
def test_the_last_body_close_is_the_last_match_of_the_pattern(html: str) -> None:
    # Searched from the end on ASCII HTML; the same answer as scanning it all.
    closes = list(t._BODY_CLOSE.finditer(html))
    assert t._last_body_close(html) == (closes[-1].start() if closes else -1)
