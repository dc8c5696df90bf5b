"""Open and click endpoints vs a bare ASGI app returning the same bytes (issue 3 §6 b).

Both run under the same server (uvicorn, same worker count, subprocesses) and take the same load: a Python
generator in another process holding a fixed number of keep-alive connections (raw asyncio sockets), half of
them fetching open pixels and half following tracked links, each with its own recipient's token. Both servers
stay up for the whole run and the load alternates between them in `--rounds` short segments, so a neighbour's
burst on a shared machine weighs on both sides alike. After each of Clarion's segments every accepted event must
be a campaign_events row within a second of that segment's last response. Prints both requests/s, the ratio
(target >= 50%), the per-round ratios, each server's CPU per request (Linux; what a neighbour's load disturbs
least), and the slowest durability.

    python -m bench.tracking_endpoints [--backend sqlite|postgres] [--workers 1] [--seconds 5] [--rounds 5]
                                       [--warmup 1] [--concurrency 32] [--runs 1] [--app clarion.app:create_app]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, free_port, migrated_sqlite, postgres_database

SECRET = "bench-secret-" + "b" * 40
LINK_URL = "https://shop.example/summer-sale?utm_source=clarion"


# --- the baseline: a bare ASGI app answering with the very same bytes -------------------------------------------

def _bare_app() -> Any:
    from clarion.tracking.public_endpoints import NO_STORE, PIXEL_GIF

    gif_headers = [(b"content-type", b"image/gif"), (b"content-length", str(len(PIXEL_GIF)).encode()),
                   *((k.lower().encode(), v.encode()) for k, v in NO_STORE.items())]
    redirect_headers = [(b"location", LINK_URL.encode()), (b"content-length", b"0"),
                        *((k.lower().encode(), v.encode()) for k, v in NO_STORE.items())]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/t/o/"):
            await send({"type": "http.response.start", "status": 200, "headers": gif_headers})
            await send({"type": "http.response.body", "body": PIXEL_GIF})
        else:
            await send({"type": "http.response.start", "status": 302, "headers": redirect_headers})
            await send({"type": "http.response.body", "body": b""})

    return app


def bare_app_factory() -> Any:
    return _bare_app()


# --- setup: a campaign whose recipients were sent, and their tracking paths ----------------------------------

async def _seed(database_url: str, recipients: int) -> tuple[list[str], str]:
    from clarion.audience import service as audience
    from clarion.audience.schemas import ContactCreate
    from clarion.campaign import claims, sending
    from clarion.campaign import service as campaigns
    from clarion.campaign.schemas import CampaignCreate, RecipientsAdd
    from clarion.db import Database
    from clarion.kit import tracking_urls
    from clarion.kit.clock import utcnow
    from clarion.tenancy import service as tenancy

    db = Database(database_url)
    async with db.transaction() as session:
        tenant = await tenancy.create_tenant(session, "Bench")
        contact_ids = [(await audience.create_contact(session, tenant.id, ContactCreate(
            email=f"reader{i}@example.com"))).id for i in range(recipients)]
        campaign = await campaigns.create_campaign(session, tenant.id, CampaignCreate(name="Bench", channel="email"))
        await campaigns.add_recipients(session, tenant.id, campaign.id, RecipientsAdd(contact_ids=contact_ids))
        await campaigns.start(session, tenant.id, campaign.id)
    async with db.transaction() as session:
        claimed = await claims.claim_due(session, now=utcnow(), limit=recipients, lease_owner="bench",
                                          lease_seconds=600, campaign_id=campaign.id)
    async with db.transaction() as session:
        await sending.record_outcomes(session, [sending.SendOutcome(recipient_id=c.id, ok=True,
                                                                    provider_message_id=f"<b{c.id}@bench>")
                                                for c in claimed], now=utcnow(), lease_owner="bench")
        link_id = (await sending.register_links(session, tenant_id=tenant.id, campaign_id=campaign.id,
                                                urls=[LINK_URL]))[LINK_URL]
    await db.dispose()
    paths = []
    for c in claimed:
        paths.append(tracking_urls.open_url("", SECRET, c.id))
        paths.append(tracking_urls.click_url("", SECRET, c.id, link_id))
    return paths, str(campaign.id)


async def _await_durable(database_url: str, campaign_id: str, accepted: int, stopped: float,
                         give_up_after: float = 10.0) -> tuple[int, int, float]:
    """Poll the campaign's open/click rows (one connection, every 20 ms) until `accepted` are stored: (rows at
    the first poll, rows at the last, seconds from `stopped` (wall clock) to the last poll)."""
    from sqlalchemy import func, select

    from clarion.db import Database
    from clarion.models import CampaignEvent

    stmt = select(func.count()).select_from(CampaignEvent).where(
        CampaignEvent.campaign_id == uuid.UUID(campaign_id), CampaignEvent.type.in_(("opened", "clicked")))
    db = Database(database_url)
    first = None
    try:
        while True:
            async with db.transaction() as session:
                stored = int((await session.execute(stmt)).scalar_one())
            elapsed = time.time() - stopped
            first = stored if first is None else first
            if stored >= accepted or elapsed > give_up_after:
                return first, stored, elapsed
            await asyncio.sleep(0.02)
    finally:
        await db.dispose()


# --- the load generator (runs in its own process) ------------------------------------------------------------

async def _connection(port: int, paths: list[str], offset: int, deadline: float, counts: dict[str, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    agent = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
    i = offset
    try:
        while time.perf_counter() < deadline:
            path = paths[i % len(paths)]
            i += 1
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: {agent}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            counts[str(status)] = counts.get(str(status), 0) + 1
    finally:
        writer.close()


async def _load(port: int, paths: list[str], concurrency: int, seconds: float) -> dict[str, Any]:
    counts: dict[str, int] = {}
    started = time.perf_counter()
    deadline = started + seconds
    step = max(1, len(paths) // concurrency)
    await asyncio.gather(*(_connection(port, paths, n * step, deadline, counts) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    # Wall-clock end of the load, so the durability clock starts when the last response came, not when this
    # process has exited.
    return {"requests": total, "seconds": elapsed, "rps": total / elapsed, "statuses": counts,
            "ended_at": time.time()}


def _load_main(args: argparse.Namespace) -> None:
    paths = json.loads(Path(args.paths_file).read_text())
    print(json.dumps(asyncio.run(_load(args.port, paths, args.concurrency, args.seconds))))


# --- orchestration ----------------------------------------------------------------------------------------------

def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if process.poll() is not None:
            raise RuntimeError("the server exited before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def _serve(target: str, port: int, workers: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    return subprocess.Popen(command, env=env)


def _run_load(port: int, paths_file: str, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.tracking_endpoints", "--load", "--port", str(port),
                          "--paths-file", paths_file, "--concurrency", str(args.concurrency),
                          "--seconds", str(seconds)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _timed_load(server: subprocess.Popen[bytes], port: int, paths_file: str, args: argparse.Namespace,
                seconds: float) -> dict[str, Any]:
    before = cpu_seconds(server.pid, children=True)
    result = _run_load(port, paths_file, args, seconds)
    result["cpu"] = cpu_seconds(server.pid, children=True) - before
    return result


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()  # SIGTERM: uvicorn shuts down cleanly, the tracking lifespan flushes its buffer
    server.wait(timeout=30)


@contextmanager
def _database(backend: str, workdir: Path) -> Iterator[str]:
    """A freshly migrated database of `backend`, dropped (PostgreSQL) on exit."""
    if backend == "sqlite":
        yield migrated_sqlite(workdir / "bench.db")
        return
    with postgres_database() as (url, _):
        yield url


def _total(segments: list[dict[str, Any]]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for segment in segments:
        for status, count in segment["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    requests = sum(segment["requests"] for segment in segments)
    return {"requests": requests, "rps": requests / sum(segment["seconds"] for segment in segments),
            "statuses": statuses, "cpu_per_request": sum(segment["cpu"] for segment in segments) / requests}


def _bench(args: argparse.Namespace) -> None:
    segment_seconds = args.seconds / args.rounds
    bare_segments: list[dict[str, Any]] = []
    our_segments: list[dict[str, Any]] = []
    durability: list[tuple[int, int, int, float]] = []  # (accepted so far, at the first count, stored, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with _database(args.backend, workdir) as url:
            paths, campaign_id = asyncio.run(_seed(url, args.recipients))
            paths_file = str(workdir / "paths.json")
            Path(paths_file).write_text(json.dumps(paths))
            env = {**os.environ, "CLARION_DATABASE_URL": url, "CLARION_SECRET_KEY": SECRET,
                   "CLARION_DATA_DIR": str(workdir / "data"),
                   "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}
            bare_port, our_port = free_port(), free_port()
            bare = _serve("bench.tracking_endpoints:bare_app_factory", bare_port, args.workers, env)
            ours = _serve(args.app, our_port, args.workers, env)
            try:
                _wait_listening(bare_port, bare)
                _wait_listening(our_port, ours)
                # Unmeasured warm-up of both: first connections, imports, Clarion's database pool and caches.
                warm = _run_load(bare_port, paths_file, args, args.warmup)
                warm = _run_load(our_port, paths_file, args, args.warmup)
                accepted = warm["statuses"].get("200", 0) + warm["statuses"].get("302", 0)
                for _ in range(args.rounds):
                    bare_segments.append(_timed_load(bare, bare_port, paths_file, args, segment_seconds))
                    before = cpu_seconds(ours.pid, children=True)
                    segment = _run_load(our_port, paths_file, args, segment_seconds)
                    our_segments.append(segment)
                    # Counted while Clarion's server runs on: durability must not wait for a shutdown. The next
                    # bare segment starts only once Clarion's writer is done, so it never shares the CPU.
                    accepted += segment["statuses"].get("200", 0) + segment["statuses"].get("302", 0)
                    at_stop, stored, after = asyncio.run(_await_durable(url, campaign_id, accepted,
                                                                        segment["ended_at"]))
                    durability.append((accepted, at_stop, stored, after))
                    # With the writing of the segment's events.
                    segment["cpu"] = cpu_seconds(ours.pid, children=True) - before
            finally:
                _stop(bare)
                _stop(ours)
    bare_total, our_total = _total(bare_segments), _total(our_segments)
    ratio = our_total["rps"] / bare_total["rps"]
    rounds = [o["rps"] / b["rps"] for b, o in zip(bare_segments, our_segments, strict=True)]
    print(f"backend={args.backend} workers={args.workers} concurrency={args.concurrency} "
          f"seconds={args.seconds} (each side) in {args.rounds} rounds after a {args.warmup}s warm-up")
    print(f"bare ASGI:        {bare_total['rps']:9.0f} req/s  ({bare_total['requests']} requests, "
          f"{bare_total['statuses']})")
    print(f"clarion /t/o,/t/c:{our_total['rps']:9.0f} req/s  ({our_total['requests']} requests, "
          f"{our_total['statuses']})")
    print(f"ratio: {ratio:.0%} (rounds: {' '.join(f'{r:.0%}' for r in rounds)}; target >= 50%) -> "
          f"{'OK' if ratio >= 0.5 else 'BELOW TARGET'}")
    # The server's own CPU per request does not depend on what else the machine runs: on a quiet machine, where
    # each server is CPU-bound, the req/s ratio tends to the inverse of this one.
    bare_cpu, our_cpu = bare_total["cpu_per_request"], our_total["cpu_per_request"]
    if bare_cpu and our_cpu:
        print(f"server CPU per request: bare {bare_cpu * 1e6:.0f} µs, clarion {our_cpu * 1e6:.0f} µs (its event "
              f"writer included{', not the database server' if args.backend == 'postgres' else ''}) -> "
              f"bare/clarion {bare_cpu / our_cpu:.0%}")
        print("  by round, bare/clarion µs: " + " ".join(
            f"{b['cpu'] / b['requests'] * 1e6:.0f}/{o['cpu'] / o['requests'] * 1e6:.0f}"
            for b, o in zip(bare_segments, our_segments, strict=True)))
    accepted, _, stored, _ = durability[-1]
    slowest = max(after for *_, after in durability)
    most_behind = max(total - at_stop for total, at_stop, _, _ in durability)
    durable = all(stored >= total and after <= 1.0 for total, _, stored, after in durability)
    print(f"events durable: {stored}/{accepted} rows; slowest round {slowest:.2f}s after its load stopped "
          f"(at most {most_behind} still buffered at a first count) -> "
          f"{'OK' if durable else 'NOT DURABLE WITHIN 1 s'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0, help="load time on each side, all rounds together")
    parser.add_argument("--rounds", type=int, default=5, help="alternating bare/Clarion segments")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured load on each server first (s)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--recipients", type=int, default=500)
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole measurement (fresh database each)")
    parser.add_argument("--app", default="clarion.app:create_app", help="the app factory to serve")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--paths-file", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    if args.load:
        _load_main(args)
    else:
        for _ in range(args.runs):
            _bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
