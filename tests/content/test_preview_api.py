from __future__ import annotations

from typing import Any

import httpx

from tests.content.test_templates_api import WHATSAPP, create


async def preview(api: httpx.AsyncClient, template_id: str, body: dict[str, Any]) -> httpx.Response:
    return await api.post(f"/api/v1/templates/{template_id}/preview", json=body)


async def test_email_preview_personalised_from_a_stored_contact(api: httpx.AsyncClient) -> None:
    contact = (await api.post("/api/v1/contacts", json={
        "email": "ada@example.com", "first_name": "Ada", "tags": ["vip"], "attributes": {"city": "London"}})).json()
    template = await create(api, {
        "name": "Welcome", "channel": "email", "subject": "Hi {{ contact.first_name }}",
        "header_html": "<header>Clarion news</header>",
        "body_html": "<p>{{ contact.first_name }} in {{ contact.attributes.city }}"
                     "{% if contact.tags contains 'vip' %} (VIP){% endif %}</p>",
        "footer_html": '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · '
                       '<a href="{{ view_in_browser_url }}">View online</a></p>'})
    response = await preview(api, template["id"], {"contact_id": contact["id"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["subject"] == "Hi Ada"
    assert "Ada in London (VIP)" in body["html"]
    assert body["html"].index("Clarion news") < body["html"].index("Ada in London") < body["html"].index("Unsubscribe")
    assert 'href="http://clarion.test/t/u/preview"' in body["html"]
    assert 'href="http://clarion.test/t/v/preview"' in body["html"]
    assert "Unsubscribe (http://clarion.test/t/u/preview)" in body["text"]


async def test_preview_from_a_sample_with_campaign_values(api: httpx.AsyncClient) -> None:
    template = await create(api, {"name": "t", "channel": "telegram",
                                  "body_text": "{{ campaign.name }}: hi {{ contact.last_name | upcase }}"})
    response = await preview(api, template["id"], {"sample": {"last_name": "Lovelace"},
                                                   "campaign": {"name": "Spring"}})
    assert response.status_code == 200, response.text
    assert response.json() == {"text": "Spring: hi LOVELACE"}
    default_campaign = await preview(api, template["id"], {"sample": {"last_name": "L"}})
    assert default_campaign.json()["text"] == "Preview: hi L"


async def test_sample_accepts_only_contact_fields(api: httpx.AsyncClient) -> None:
    template = await create(api, {"name": "t", "channel": "push", "body_text": "hi"})
    response = await preview(api, template["id"], {"sample": {"first_name": "A", "password": "x"}})
    assert response.status_code == 422
    neither = await preview(api, template["id"], {})
    assert neither.status_code == 422
    assert "contact_id or sample" in neither.json()["detail"]


async def test_missing_variable_uses_default_or_fails_naming_it(api: httpx.AsyncClient) -> None:
    template = await create(api, {
        "name": "t", "channel": "email", "subject": "Code {{ promo }}",
        "body_html": "<p>Hi</p>\n<p>{{ contact.attributes.tier }}</p>\n<p>{{ contact.attributes.city }}</p>",
        "variables": {"promo": "WELCOME10", "contact.attributes.tier": "member"}})
    failed = await preview(api, template["id"], {"sample": {"email": "a@example.com"}})
    assert failed.status_code == 422
    assert failed.json()["detail"] == "body_html line 3: 'contact.attributes.city' is undefined"
    assert failed.json()["errors"][0]["loc"] == ["template", "body_html"]

    await api.put(f"/api/v1/templates/{template['id']}", json={"body_html": (
        "<p>{{ contact.attributes.tier }}</p><p>{{ contact.attributes.city | default: 'your town' }}</p>")})
    ok = await preview(api, template["id"], {"sample": {"email": "a@example.com"}})
    assert ok.status_code == 200, ok.text
    assert ok.json()["subject"] == "Code WELCOME10"
    assert ">member<" in ok.json()["html"] and ">your town<" in ok.json()["html"]
    own_value = await preview(api, template["id"], {"sample": {"attributes": {"tier": "gold", "city": "Oslo"}}})
    assert ">gold<" in own_value.json()["html"] and ">Oslo<" in own_value.json()["html"]


async def test_css_is_inlined_and_contact_values_escaped(api: httpx.AsyncClient) -> None:
    template = await create(api, {"name": "t", "channel": "email", "subject": "S",
                                  "body_html": "<style>p{color:red}</style><p>{{ contact.first_name }}</p>"})
    response = await preview(api, template["id"], {"sample": {"first_name": "<b>Eve</b>"}})
    html = response.json()["html"]
    assert '<p style="color: red;">&lt;b&gt;Eve&lt;/b&gt;</p>' in html
    assert "<style>" not in html


async def test_text_part_generated_from_html(api: httpx.AsyncClient) -> None:
    template = await create(api, {"name": "t", "channel": "email", "subject": "S", "body_html": (
        "<h1>Spring &amp; sale</h1><p>Dear {{ contact.first_name }},<br>our offer.</p>"
        "<p>See <a href=\"https://shop.example/sale\">the sale</a></p>")})
    text = (await preview(api, template["id"], {"sample": {"first_name": "Ada"}})).json()["text"]
    assert text == "Spring & sale\n\nDear Ada,\nour offer.\n\nSee the sale (https://shop.example/sale)\n"


async def test_explicit_text_part_is_rendered_not_generated(api: httpx.AsyncClient) -> None:
    template = await create(api, {"name": "t", "channel": "email", "subject": "S", "body_html": "<p>HTML</p>",
                                  "body_text": "Plain {{ contact.first_name }}"})
    body = (await preview(api, template["id"], {"sample": {"first_name": "Ada"}})).json()
    assert body["text"] == "Plain Ada"


async def test_whatsapp_components_are_rendered(api: httpx.AsyncClient) -> None:
    template = await create(api, WHATSAPP | {"whatsapp": WHATSAPP["whatsapp"] | {"components": [
        {"type": "header", "parameters": [{"type": "image", "image": {
            "link": "https://example.com/{{ contact.attributes.tier }}.jpg"}}]},
        {"type": "body", "parameters": [{"type": "text", "text": "{{ contact.first_name }}"},
                                        {"type": "text", "text": "30%"}]},
        {"type": "button", "sub_type": "quick_reply", "index": 0,
         "parameters": [{"type": "payload", "payload": "stop-{{ contact.id | default: 'sample' }}"}]}]}})
    response = await preview(api, template["id"], {"sample": {"first_name": "Ada", "attributes": {"tier": "gold"}}})
    assert response.status_code == 200, response.text
    assert response.json() == {"template": {"name": "summer_sale_promo", "language": {"code": "en_US"}, "components": [
        {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://example.com/gold.jpg"}}]},
        {"type": "body", "parameters": [{"type": "text", "text": "Ada"}, {"type": "text", "text": "30%"}]},
        {"type": "button", "sub_type": "quick_reply", "index": 0,
         "parameters": [{"type": "payload", "payload": "stop-sample"}]}]}}


async def test_sms_preview_counts_segments(api: httpx.AsyncClient) -> None:
    template = await create(api, {"name": "t", "channel": "sms", "body_text": "{{ contact.attributes.msg }}"})
    cases = [("a" * 160, 1, "GSM-7"), ("a" * 161, 2, "GSM-7"), ("Sale 🎉", 1, "UCS-2"), ("{" * 80, 1, "GSM-7"),
             ("{" * 81, 2, "GSM-7"), ("é" * 70, 1, "GSM-7"), ("ł" * 71, 2, "UCS-2")]
    for message, segments, encoding in cases:
        response = await preview(api, template["id"], {"sample": {"attributes": {"msg": message}}})
        assert response.json() == {"text": message, "segments": segments, "encoding": encoding}, message


async def test_template_cannot_reach_outside_its_context(api: httpx.AsyncClient) -> None:
    template = await create(api, {"name": "t", "channel": "sms", "body_text": "x"})
    for probe in ("{{ contact.__class__ }}", "{{ settings }}", "{{ contact.email.upper }}",
                  "{{ contact.attributes.items }}", "{{ contact.__dict__ }}", "{{ campaign.__init__.__globals__ }}"):
        await api.put(f"/api/v1/templates/{template['id']}", json={"body_text": probe})
        response = await preview(api, template["id"], {"sample": {"email": "a@example.com"}})
        assert response.status_code == 422, probe
        assert "is undefined" in response.json()["detail"], probe


async def test_whatsapp_render_failure_names_the_parameter(api: httpx.AsyncClient) -> None:
    template = await create(api, WHATSAPP)
    response = await preview(api, template["id"], {"sample": {"email": "a@example.com"}})
    assert response.status_code == 200  # first_name is a known field: empty, not undefined
    await api.put(f"/api/v1/templates/{template['id']}", json={"whatsapp": WHATSAPP["whatsapp"] | {"components": [
        {"type": "body", "parameters": [{"type": "text", "text": "{{ contact.attributes.code }}"}]}]}})
    failed = await preview(api, template["id"], {"sample": {"email": "a@example.com"}})
    assert failed.status_code == 422
    assert failed.json()["detail"] == ("whatsapp.components[0].parameters[0].text line 1: "
                                       "'contact.attributes.code' is undefined")
    assert failed.json()["errors"][0]["loc"] == ["template", "whatsapp", "components", 0, "parameters", 0, "text"]
