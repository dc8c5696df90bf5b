"""GET /t/v/{token}: the message as the send rendered it for that recipient, as a web page."""

from __future__ import annotations

from clarion.delivery.compose import Links
from tests.tracking.helpers import BASE, SECRET, open_path, path_of, sent_campaign


async def _template(api, **fields) -> str:  # type: ignore[no-untyped-def]
    body = {"name": "Welcome", "channel": "email", "subject": "Hi {{ contact.first_name }}",
            "body_html": "<p>Hello {{ contact.first_name }}, your code is {{ promo_code }}.</p>"
                         '<p><a href="{{ view_in_browser_url }}">View in browser</a> · '
                         '<a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
            "variables": {"promo_code": "SUMMER10"}, **fields}
    response = await api.post("/api/v1/templates", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def test_the_view_link_shows_the_recipients_own_rendered_message(api, db) -> None:  # type: ignore[no-untyped-def]
    template_id = await _template(api)
    ann, bob = await sent_campaign(api, db, ["ann@example.com", "bob@example.com"], template_id=template_id)
    await api.patch(f"/api/v1/contacts/{ann.contact_id}", json={"first_name": "Ann"})
    view_url = Links(BASE, SECRET).view_in_browser(ann.id)
    response = await api.get(path_of(view_url))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"].startswith("no-store")
    page = response.text
    assert "Hello Ann, your code is SUMMER10." in page
    assert f'href="{view_url}"' in page and f"{BASE}/t/u/" in page
    other = await api.get(path_of(Links(BASE, SECRET).view_in_browser(bob.id)))
    assert other.status_code == 200 and "Hello Ann" not in other.text


async def test_bad_view_tokens_are_404(api, db) -> None:  # type: ignore[no-untyped-def]
    template_id = await _template(api)
    [ann] = await sent_campaign(api, db, ["ann@example.com"], template_id=template_id)
    good = path_of(Links(BASE, SECRET).view_in_browser(ann.id))
    [no_template] = await sent_campaign(api, db, ["cy@example.com"])
    for path in (good[:-2] + ("AA" if not good.endswith("AA") else "BB"),      # tampered
                 "/t/v/" + open_path(ann.id).rsplit("/", 1)[1].removesuffix(".gif"),  # an open token
                 path_of(Links(BASE, "another-install-" + "q" * 30).view_in_browser(ann.id)),
                 path_of(Links(BASE, SECRET).view_in_browser(999_999_999)),          # no such recipient
                 path_of(Links(BASE, SECRET).view_in_browser(no_template.id)),      # nothing to render
                 "/t/v/garbage"):
        response = await api.get(path)
        assert response.status_code == 404, path
        assert "Hello" not in response.text
