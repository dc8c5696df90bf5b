"""The CLI as a user runs it: a real process, a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from clarion.config import Settings

CLARION = [sys.executable, "-m", "clarion.cli"]


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLARION + args, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_tenant_create_json_prints_id_and_key_once_stored_hashed(tmp_path: Path) -> None:
    env = {"CLARION_DATA_DIR": str(tmp_path)}
    result = run(["tenant", "create", "Acme", "--plan", "business", "--json"], env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    uuid.UUID(out["tenant_id"])
    assert out["api_key"].startswith("clk_")
    # The secret was generated into the data dir, and the key itself is nowhere in the database file.
    assert (tmp_path / "secret_key").exists()
    secret_part = out["api_key"].rsplit("_", 1)[-1]
    assert secret_part.encode() not in (tmp_path / "clarion.db").read_bytes()
    assert Settings(data_dir=tmp_path).resolved_secret_key() == (tmp_path / "secret_key").read_text().strip()


def test_serve_refuses_unmigrated_postgres(pg_url: str) -> None:
    import psycopg

    admin_url = os.environ.get("CLARION_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"clarion_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin_url.rsplit("/", 1)[0] + "/" + name
        result = run(["serve", "--port", "0"], {"CLARION_DATABASE_URL": url}, timeout=60)
        assert result.returncode == 2
        assert "clarion migrate" in result.stdout + result.stderr
        migrated = run(["migrate"], {"CLARION_DATABASE_URL": url})
        assert migrated.returncode == 0, migrated.stderr
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_vapid_keys_prints_a_pair_a_webpush_channel_takes(tmp_path: Path) -> None:
    from clarion.delivery.channels.webpush import WebPushConfig

    result = run(["vapid-keys"], {"CLARION_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    keys = json.loads(result.stdout)
    config = WebPushConfig.model_validate({**keys, "vapid_subject": "mailto:ops@shop.example"})
    assert config.vapid_public_key == keys["vapid_public_key"]
    assert not (tmp_path / "clarion.db").exists()  # nothing stored
