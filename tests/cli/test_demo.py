"""`clarion demo` seeds a usable tenant through the public API, and reruns reuse it with a fresh key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from clarion.app import create_app
from clarion.config import Settings
from clarion.db import Database


def _demo(data_dir: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "clarion.cli", "demo", "--no-serve", "--contacts", "300"],
                            env={**os.environ, "CLARION_DATA_DIR": str(data_dir)}, capture_output=True, text=True,
                            timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_demo_seeds_a_tenant_whose_newsletter_is_running(tmp_path: Path) -> None:
    out = _demo(tmp_path)
    key = re.search(r"API key:\s+(clk_\S+)", out).group(1)  # type: ignore[union-attr]
    watched = re.search(r"campaigns/([0-9a-f-]{36})/stats", out).group(1)  # type: ignore[union-attr]

    settings = Settings(data_dir=tmp_path)
    db = Database(settings.resolved_database_url)
    app = create_app(settings, database=db)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo",
                                     headers={"Authorization": f"Bearer {key}"}) as api:
            campaigns = (await api.get("/api/v1/campaigns")).json()["items"]
            assert {c["name"]: c["status"] for c in campaigns} == {
                "Summer Sale 2025": "running", "November newsletter": "running", "Flash sale SMS": "scheduled",
                "Back in stock SMS": "running"}
            channels = (await api.get("/api/v1/channels")).json()["items"]
            assert {(c["channel"], c["provider"]) for c in channels} >= {("whatsapp", "whatsapp"), ("sms", "twilio"),
                                                                          ("email", "outbox")}
            stats = (await api.get(f"/api/v1/campaigns/{watched}/stats")).json()
            assert stats["status"] == "running" and stats["total_target"] > 0
            assert len((await api.get("/api/v1/segments")).json()["items"]) == 4
            assert len((await api.get("/api/v1/templates")).json()["items"]) == 4
            contacts = (await api.get("/api/v1/contacts", params={"limit": 500})).json()["items"]
            assert len(contacts) == 300
    finally:
        await db.dispose()

    # The banner says how to watch the WhatsApp and SMS campaigns too, on every run.
    assert re.search(r"WhatsApp:.*campaigns/[0-9a-f-]{36}/stats", out) and re.search(r"SMS:.*/stats", out)
    again = _demo(tmp_path)
    second_key = re.search(r"API key:\s+(clk_\S+)", again).group(1)  # type: ignore[union-attr]
    assert second_key != key and watched in again and "WhatsApp:" in again
