"""Open pixel and tracked clicks: the responses, machine flags, human and total counters."""

from __future__ import annotations

from datetime import timedelta

import httpx

from clarion.kit.clock import clock
from clarion.tracking.public_endpoints import PIXEL_GIF
from tests.tracking.helpers import (
    click_path,
    counters,
    events,
    flush,
    open_path,
    recipient,
    register_link,
    sent_campaign,
)

HUMAN_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko)"
NO_CACHE = {"cache-control": "no-store, no-cache, must-revalidate, max-age=0", "pragma": "no-cache", "expires": "0"}


async def test_the_pixel_is_a_gif_with_no_cache_headers_and_counts_a_human_open(api, db, app) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    response = await api.get(open_path(ann.id), headers={"User-Agent": HUMAN_UA})
    assert response.status_code == 200
    assert response.content == PIXEL_GIF and response.content.startswith(b"GIF89a")
    assert response.headers["content-type"] == "image/gif"
    assert {k: response.headers[k] for k in NO_CACHE} == NO_CACHE
    await flush(app)
    [event] = await events(db, ann.id, "opened")
    assert event.metadata_["flags"] == {"machine": False}
    assert event.metadata_["user_agent"] == HUMAN_UA and event.metadata_["ip"]
    assert (await recipient(api, ann.campaign_id, ann.id))["status"] == "opened"
    seen = await counters(db, api.tenant.id, ann.campaign_id)
    assert (seen["opened"], seen["opened_total"]) == (1, 1)


async def test_a_bad_token_still_gets_the_gif_and_records_nothing(api, db, app) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    good = open_path(ann.id)
    for path in (good.replace(".gif", "x.gif"), "/t/o/garbage.gif",
                 click_path(ann.id, 1).replace("/t/c/", "/t/o/") + ".gif"):
        response = await api.get(path, headers={"User-Agent": HUMAN_UA})
        assert (response.status_code, response.content) == (200, PIXEL_GIF)
        assert response.headers["cache-control"] == NO_CACHE["cache-control"]
    await flush(app)
    assert await events(db, ann.id, "opened") == []
    assert (await counters(db, api.tenant.id, ann.campaign_id))["opened_total"] == 0


async def test_machine_opens_are_stored_flagged_and_counted_only_in_the_total(api, db, app) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    path = open_path(ann.id)
    assert (await api.head(path, headers={"User-Agent": HUMAN_UA})).status_code == 200
    await api.get(path, headers={"User-Agent": HUMAN_UA, "Sec-Purpose": "prefetch"})
    await api.get(path, headers={"User-Agent": HUMAN_UA, "Purpose": "prefetch"})
    await api.get(path, headers={"User-Agent": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
                                               "(via ggpht.com GoogleImageProxy)"})
    apple = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("17.58.101.12", 50000)),
                              base_url="http://clarion.test")
    async with apple:
        await apple.get(path, headers={"User-Agent": "Mozilla/5.0"})
    await flush(app)
    reasons = [e.metadata_["flags"].get("reason") for e in await events(db, ann.id, "opened")]
    assert reasons == ["head_request", "prefetch", "prefetch", "image_proxy", "machine_network"]
    assert (await recipient(api, ann.campaign_id, ann.id))["status"] == "sent"
    seen = await counters(db, api.tenant.id, ann.campaign_id)
    assert (seen["opened"], seen["opened_total"]) == (0, 5)

    await api.get(path, headers={"User-Agent": HUMAN_UA})
    await api.get(path, headers={"User-Agent": HUMAN_UA})
    await flush(app)
    seen = await counters(db, api.tenant.id, ann.campaign_id)
    assert (seen["opened"], seen["opened_total"]) == (1, 7)


async def test_a_click_redirects_to_the_stored_url_and_counts(api, db, app) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    link = await register_link(db, api.tenant.id, ann.campaign_id, "https://shop.example/sale?x=1&y=2")
    clock.advance(timedelta(minutes=5))  # well after the send: no scanner suspicion
    try:
        response = await api.get(click_path(ann.id, link) + "?url=https://evil.example",
                                 headers={"User-Agent": HUMAN_UA})
    finally:
        clock.reset()
    assert response.status_code == 302
    assert response.headers["location"] == "https://shop.example/sale?x=1&y=2"
    await flush(app)
    [event] = await events(db, ann.id, "clicked")
    assert event.metadata_["url"] == "https://shop.example/sale?x=1&y=2" and event.metadata_["link_id"] == link
    assert event.metadata_["flags"] == {"machine": False}
    assert (await recipient(api, ann.campaign_id, ann.id))["status"] == "clicked"
    seen = await counters(db, api.tenant.id, ann.campaign_id)
    assert (seen["clicked"], seen["clicked_total"]) == (1, 1)


async def test_tampered_foreign_and_wrong_purpose_click_tokens_are_404_without_location(api, db, app) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    [bob] = await sent_campaign(api, db, ["bob@example.com"])
    link = await register_link(db, api.tenant.id, ann.campaign_id, "https://shop.example/sale")
    bobs_link = await register_link(db, api.tenant.id, bob.campaign_id, "https://shop.example/bob")
    from clarion.kit import tracking_urls

    good = click_path(ann.id, link)
    foreign_secret = tracking_urls.click_url("http://x", "another-install-" + "q" * 30, ann.id, link)
    bad_paths = [
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),           # tampered MAC
        "/t/c/" + ".".join([*good.rsplit("/", 1)[1].split(".")[:1], "nzz", good.rsplit(".", 1)[1]]),  # link swapped
        "/t/c/" + foreign_secret.rsplit("/", 1)[1],                         # signed by another install
        "/t/c/" + open_path(ann.id).rsplit("/", 1)[1].removesuffix(".gif"),  # an open token
        click_path(ann.id, bobs_link),                                      # a link of another campaign
        click_path(ann.id, 999_999_999),                                    # no such link
        "/t/c/not-a-token",
    ]
    for path in bad_paths:
        response = await api.get(path, headers={"User-Agent": HUMAN_UA})
        assert response.status_code == 404, path
        assert "location" not in response.headers
    await flush(app)
    assert await events(db, ann.id, "clicked") == []


async def test_scanner_clicks_are_flagged_and_fast_clicks_from_unseen_clients_too(api, db, app) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    link = await register_link(db, api.tenant.id, ann.campaign_id, "https://shop.example/sale")
    path = click_path(ann.id, link)
    # Right after the send: a known scanner, then a browser never seen for this contact.
    await api.get(path, headers={"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"})
    await api.get(path, headers={"User-Agent": HUMAN_UA})
    await flush(app)
    reasons = [e.metadata_["flags"].get("reason") for e in await events(db, ann.id, "clicked")]
    assert reasons == ["scanner", "click_right_after_send"]
    seen = await counters(db, api.tenant.id, ann.campaign_id)
    assert (seen["clicked"], seen["clicked_total"]) == (0, 2)

    # The reader opens on a phone, then clicks within seconds from that same phone: a seen client, human.
    phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
    await api.get(open_path(ann.id), headers={"User-Agent": phone})
    await flush(app)
    await api.get(path, headers={"User-Agent": phone})
    await flush(app)
    assert (await events(db, ann.id, "clicked"))[-1].metadata_["flags"] == {"machine": False}

    # Later than the window, even a new client is a human.
    clock.advance(timedelta(seconds=11))
    try:
        await api.get(path, headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"})
    finally:
        clock.reset()
    await flush(app)
    assert (await events(db, ann.id, "clicked"))[-1].metadata_["flags"] == {"machine": False}
    seen = await counters(db, api.tenant.id, ann.campaign_id)
    assert (seen["clicked"], seen["clicked_total"]) == (1, 4)
