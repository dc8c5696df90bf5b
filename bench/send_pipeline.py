"""Bench (a): the whole send pipeline into a local SMTP sink vs a bare aiosmtplib loop over as many connections.

    python -m bench.send_pipeline [--messages N] [--connections C] [--db sqlite|postgres|both] [--rounds R]
                                  [--small-baseline]

The sink is aiosmtpd in a process of its own whose handler only answers 250 (no installation beyond the test
extras). Besides the rates, each side's CPU time per message in this process is printed: the bare loop mostly
waits on the sink, while the pipeline is bound by its own CPU, so the CPU figure is the steadier one on a busy
machine. The baseline sends N pre-built messages over C aiosmtplib connections: the very messages the pipeline
sends (the same envelopes and bytes), captured from a first, untimed pipeline run, so both sides put the same
bytes through aiosmtplib and the sink and the ratio is the pipeline's own cost. (Until 2026-12-07 the baseline
sent small stand-in messages of ~700 bytes against the pipeline's ~3 KB; `--small-baseline` still does, for
comparison with the figures of then.) The pipeline run is what a worker does for a campaign of N recipients:
claim batches under a lease, load the contacts, render the Liquid template, register and rewrite links, add the
open pixel, build the RFC 5322 bytes, send through the SMTP channel's pool of C connections and record every
outcome. Target: the pipeline reaches at least 50% of the baseline's messages per second.

The bare loop's rate swings with the neighbours' load far more than the pipeline's (450–3,350 msg/s in one
afternoon), so `--rounds R` alternates the two R times against one sink and judges the median of the per-round
ratios.

Neither side signs with DKIM (the bench's channel has no key): signing is a per-message RSA operation that the
baseline would not pay, and is measured apart. The machine is shared with the sink (and with PostgreSQL), so
run it a few times and read the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import free_port, postgres_database

TARGET_SHARE = 0.5
TEMPLATE_HTML = """<html><head><style>p { color: #333; font-family: sans-serif }</style></head><body>
<h1>Spring deals, {{ contact.first_name | default: "friend" }}</h1>
<p>Everything in {{ contact.attributes.city | default: "your city" }} is 20% off this week.</p>
<p><a href="https://shop.example/spring?utm_source=clarion">Shop the sale</a> or
<a href="https://shop.example/stores">find a store</a>.</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>"""


# --- the sink ------------------------------------------------------------------------------------------------


def run_sink(port: int, capture: Path | None = None) -> None:
    """aiosmtpd answering 250 to everything; prints how many messages it took when it gets SIGTERM. With
    `capture`, it also keeps every message (envelope sender, recipients, bytes) and pickles the list there."""
    from aiosmtpd.controller import Controller

    captured: list[tuple[str, list[str], bytes]] = []

    class Sink:
        count = 0

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            Sink.count += 1
            if capture is not None:
                captured.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            return "250 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    while not stop:
        time.sleep(0.05)
    controller.stop()
    if capture is not None:
        capture.write_bytes(pickle.dumps(captured))
    print(Sink.count, flush=True)


class SinkProcess:
    def __init__(self, capture: Path | None = None) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.send_pipeline", "--sink", str(self.port), *([str(capture)] if capture else [])],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return int(out.strip().splitlines()[-1])


# --- the baseline ----------------------------------------------------------------------------------------------


# An envelope sender, its recipients and the message's bytes, as the SMTP sink took them.
Envelope = tuple[str, list[str], bytes]


def stand_in_messages(messages: int) -> list[Envelope]:
    """The baseline before 2026-12-07: small messages (~700 bytes) built with Clarion's builder."""
    from clarion.delivery.email_message import build_email

    return [
        ("news@shop.example", [f"fan{i}@example.com"], build_email(
            from_addr="news@shop.example",
            to_addr=f"fan{i}@example.com",
            subject="Spring deals",
            html=f"<p>Hello fan {i}</p>",
            text=f"Hello fan {i}",
            list_unsubscribe_url=f"https://clarion.test/t/u/{i}",
            message_id_domain="shop.example",
        ))
        for i in range(messages)
    ]


async def pipeline_messages(backend: str, messages: int, connections: int) -> list[Envelope]:
    """What the pipeline sends for a campaign of `messages`: one untimed run into a sink that keeps them."""
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "messages.pickle"
        sink = SinkProcess(capture)
        try:
            await _pipeline_on(backend, sink.port, messages, connections)
        finally:
            sink.stop()
        captured: list[Envelope] = pickle.loads(capture.read_bytes())
    assert len(captured) == messages, f"captured {len(captured)} of {messages} messages"
    return captured


async def bare_loop(port: int, prebuilt: list[Envelope], connections: int) -> tuple[float, float]:
    """(messages per second, this process's CPU seconds per message) of aiosmtplib sending pre-built messages over
    `connections` connections."""
    import aiosmtplib

    queue: asyncio.Queue[Envelope] = asyncio.Queue()
    for item in prebuilt:
        queue.put_nowait(item)

    async def sender() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        while not queue.empty():
            sender_address, recipients, raw = queue.get_nowait()
            await smtp.sendmail(sender_address, recipients, raw)
        await smtp.quit()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(sender() for _ in range(connections)))
    return len(prebuilt) / (time.perf_counter() - started), (time.process_time() - cpu) / len(prebuilt)


# --- the pipeline ----------------------------------------------------------------------------------------------


async def pipeline(url: str, data_dir: Path, port: int, messages: int,
                   connections: int) -> tuple[float, float, int]:
    """(messages per second, this process's CPU seconds per message, messages recorded sent) of the dispatcher
    sending a campaign of `messages`. The CPU includes SQLite's own work, which runs in this process."""
    import httpx
    from sqlalchemy import func, select

    from clarion.app import create_app
    from clarion.config import Settings
    from clarion.db import Database
    from clarion.delivery.dispatch import Dispatcher
    from clarion.kit.interpreter import freeze_startup_objects
    from clarion.migrate import upgrade
    from clarion.models import CampaignRecipient
    from clarion.tenancy import service as tenancy
    from clarion.tenancy.schemas import ApiKeyCreate

    await asyncio.to_thread(upgrade, url)
    settings = Settings(
        data_dir=data_dir, database_url=url, secret_key="bench-" + "s" * 40, base_url="https://clarion.test"
    )
    db = Database(settings.resolved_database_url)
    try:
        async with db.transaction() as session:
            tenant = await tenancy.create_tenant(session, "Bench")
            _, key = await tenancy.create_api_key(session, tenant.id, ApiKeyCreate(name="bench"))
        app = create_app(settings, database=db)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="https://clarion.test",
            headers={"Authorization": f"Bearer {key}"},
            timeout=600,
        ) as api:
            campaign_id = await _seed(api, port, messages, connections)
        dispatcher = Dispatcher(db, settings)
        freeze_startup_objects()  # as `clarion serve` and `clarion worker` do once started
        started, cpu = time.perf_counter(), time.process_time()
        try:
            report = await dispatcher.drain([campaign_id])
        finally:
            await dispatcher.close()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        async with db.transaction() as session:
            sent = (
                await session.execute(
                    select(func.count()).where(
                        CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.status == "sent"
                    )
                )
            ).scalar_one()
        assert report.sent == messages, f"the pipeline sent {report.sent} of {messages}"
        return messages / elapsed, cpu / messages, int(sent)
    finally:
        await db.dispose()


async def _seed(api, port: int, messages: int, connections: int) -> uuid.UUID:  # type: ignore[no-untyped-def]
    emails = [f"fan{i}@example.com" for i in range(messages)]
    csv = "email,first_name,city\n" + "".join(f"{e},Fan{i},City{i % 50}\n" for i, e in enumerate(emails))
    response = await api.post("/api/v1/contacts/import", files={"file": ("c.csv", csv.encode(), "text/csv")})
    assert response.status_code == 200, response.text
    response = await api.post(
        "/api/v1/channels",
        json={
            "channel": "email",
            "provider": "smtp",
            "name": "sink",
            "config": {
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "pool_size": connections,
                "max_messages_per_connection": messages + 1,
            },
        },
    )
    assert response.status_code == 201, response.text
    response = await api.post(
        "/api/v1/templates",
        json={
            "name": "spring",
            "channel": "email",
            "subject": "Spring deals, {{ contact.first_name }}",
            "body_html": TEMPLATE_HTML,
        },
    )
    assert response.status_code == 201, response.text
    response = await api.post(
        "/api/v1/campaigns",
        json={
            "name": "Bench",
            "channel": "email",
            "template_id": response.json()["id"],
            "from_email": "news@shop.example",
        },
    )
    assert response.status_code == 201, response.text
    campaign_id = response.json()["id"]
    for start in range(0, messages, 10_000):
        response = await api.post(
            f"/api/v1/campaigns/{campaign_id}/recipients", json={"emails": emails[start : start + 10_000]}
        )
        assert response.status_code == 200, response.text
    response = await api.post(f"/api/v1/campaigns/{campaign_id}/start")
    assert response.status_code == 200, response.text
    return uuid.UUID(campaign_id)


async def _pipeline_on(backend: str, port: int, messages: int, connections: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "postgres":
            # pipeline() migrates the database itself.
            with postgres_database("clarion_bench_send", migrate=False) as (url, _):
                return await pipeline(url, Path(tmp), port, messages, connections)
        return await pipeline(f"sqlite+aiosqlite:///{tmp}/bench.db", Path(tmp), port, messages, connections)


async def run(backend: str, messages: int, connections: int, rounds: int, small_baseline: bool) -> bool:
    """`rounds` rounds against one sink, each the bare loop and the pipeline (their order alternating), each
    ratio taken against the bare loop of its own round; the verdict is on the median ratio."""
    if small_baseline:
        prebuilt = stand_in_messages(messages)
    else:
        prebuilt = await pipeline_messages(backend, messages, connections)
    sizes = [len(raw) for _, _, raw in prebuilt]
    print(f"{backend:>8}: the bare loop sends {'stand-in' if small_baseline else 'the pipeline' + chr(39) + 's'} "
          f"messages, {statistics.mean(sizes):,.0f} bytes on average", flush=True)
    sink = SinkProcess()
    shares, recorded_all = [], 0
    try:
        for round_ in range(rounds):
            if round_ % 2 == 0:
                baseline, bare_cpu = await bare_loop(sink.port, prebuilt, connections)
                rate, cpu, recorded = await _pipeline_on(backend, sink.port, messages, connections)
            else:
                rate, cpu, recorded = await _pipeline_on(backend, sink.port, messages, connections)
                baseline, bare_cpu = await bare_loop(sink.port, prebuilt, connections)
            share = rate / baseline
            shares.append(share)
            recorded_all += recorded
            label = backend if rounds == 1 else f"{backend} {round_ + 1}/{rounds}"
            print(
                f"{label:>8}: bare aiosmtplib {baseline:7.0f} msg/s | pipeline {rate:7.0f} msg/s | "
                f"ratio {share:5.1%} (target >= {TARGET_SHARE:.0%}) | CPU of this process per message: bare "
                f"{bare_cpu * 1e3:.3f} ms, pipeline {cpu * 1e3:.3f} ms | recorded sent {recorded}/{messages} | "
                f"load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    finally:
        received = sink.stop()
    median = statistics.median(shares)
    ok = median >= TARGET_SHARE and recorded_all == rounds * messages and received == 2 * rounds * messages
    print(
        f"{backend:>8}: median ratio {median:5.1%} over {rounds} round(s) | sink received "
        f"{received}/{2 * rounds * messages} | {'OK' if ok else 'BELOW TARGET'}",
        flush=True,
    )
    return ok


def main() -> int:
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--sink":
        run_sink(int(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) == 4 else None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate bare loop and pipeline this many times against one sink; judge the median")
    parser.add_argument("--small-baseline", action="store_true",
                        help="the bare loop sends small stand-in messages instead of the pipeline's own (as before "
                             "2026-12-07)")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    print(
        f"send pipeline: {args.messages} messages over {args.connections} SMTP connections into an aiosmtpd sink"
    )
    results = [asyncio.run(run(backend, args.messages, args.connections, args.rounds, args.small_baseline))
               for backend in backends]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
