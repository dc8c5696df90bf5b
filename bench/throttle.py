"""Bench: the shared throughput limit against a provider that punishes every excess message.

    python -m bench.throttle [--rate R] [--seconds S] [--workers W] [--db sqlite|postgres|both]

A fake provider (a small asyncio HTTP/1.1 server in its own process) answers 429 to any request that would
make more than R accepted requests in a sliding 1-second window of its own clock. W worker processes, each
with its own engine on one freshly migrated database, send POSTs through delivery.throttle.Throttle with
httpx for S seconds. Targets: 0 rejections, and an accepted rate of at least 97% of R.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

TARGET_SHARE = 0.97
PG_ADMIN_URL = os.environ.get("CLARION_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


# --- the fake provider ------------------------------------------------------------------------------------

class SlidingWindowProvider:
    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.window: collections.deque[float] = collections.deque()
        self.accepted = 0
        self.rejected = 0
        self.first: float | None = None
        self.last: float | None = None

    def admit(self) -> bool:
        now = time.monotonic()
        while self.window and self.window[0] <= now - 1.0:
            self.window.popleft()
        if len(self.window) >= self.rate:
            self.rejected += 1
            return False
        self.window.append(now)
        self.accepted += 1
        self.first = now if self.first is None else self.first
        self.last = now
        return True

    def stats(self) -> dict[str, float | int | None]:
        span = (self.last - self.first) if self.first is not None and self.last is not None else None
        return {"accepted": self.accepted, "rejected": self.rejected, "span": span}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in header_lines:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                if request_line.startswith("GET /stats"):
                    status, body = "200 OK", json.dumps(self.stats()).encode()
                elif self.admit():
                    status, body = "200 OK", b'{"ok":true}'
                else:
                    status, body = "429 Too Many Requests", b'{"ok":false}'
                writer.write(f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve(rate: int) -> None:
    provider = SlidingWindowProvider(rate)
    server = await asyncio.start_server(provider.handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


# --- one worker process -------------------------------------------------------------------------------------

async def work(url: str, port: int, key: str, rate: float, seconds: float, start_at: float) -> None:
    import httpx

    from clarion.db import Database
    from clarion.delivery.throttle import Throttle, database_clock

    database = Database(url)
    statuses: collections.Counter[int] = collections.Counter()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                 limits=httpx.Limits(max_connections=32, max_keepalive_connections=32)) as client:
        # Warm up before the clock starts, as a long-running worker is: a pooled database connection, the
        # clock mapping, and a few open keep-alive connections to the provider (GET /stats is not counted).
        await database_clock(database).probe(database, times=5)
        await asyncio.gather(*(client.get("/stats") for _ in range(8)))
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def send_one(n: int) -> int:
            response = await client.post("/send", content=b'{"to":"+15550100"}')
            statuses[response.status_code] += 1
            return response.status_code

        throttle = Throttle(database, key, rate)
        try:
            await asyncio.wait_for(throttle.send(range(int(rate * seconds) + 1), send_one), seconds)
        except TimeoutError:
            pass  # the run is over; whatever was reserved and unsent is simply not sent
        stats = throttle.stats
        bounds = throttle.clock.bounds()
    await database.dispose()
    print(json.dumps({"statuses": dict(statuses), "missed": stats.missed, "reservations": stats.reservations,
                      "probes": stats.probes,
                      "clock_uncertainty_ms": None if bounds is None else round((bounds[1] - bounds[0]) * 1e3, 3)}),
          flush=True)


# --- the driver ---------------------------------------------------------------------------------------------

def run(url: str, label: str, rate: int, seconds: float, workers: int) -> bool:
    import httpx

    server = subprocess.Popen([sys.executable, "-m", "bench.throttle", "--serve", "--rate", str(rate)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        key = f"bench:{uuid.uuid4()}"
        start_at = time.time() + 3.0  # time for every worker to import and connect
        procs = [subprocess.Popen([sys.executable, "-m", "bench.throttle", "--work", "--url", url, "--port",
                                   str(port), "--key", key, "--rate", str(rate), "--seconds", str(seconds),
                                   "--start-at", str(start_at)], stdout=subprocess.PIPE, text=True)
                 for _ in range(workers)]
        reports = []
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"a worker failed with exit code {proc.returncode}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        stats = httpx.get(f"http://127.0.0.1:{port}/stats").json()
    finally:
        server.terminate()
        server.wait()
    accepted, rejected = stats["accepted"], stats["rejected"]
    achieved = accepted / seconds
    share = achieved / rate
    ok = rejected == 0 and share >= TARGET_SHARE
    print(f"{label:9} R={rate:<5} W={workers} {seconds:>4.0f}s  accepted {accepted:>6}  rejected {rejected:>4}  "
          f"achieved {achieved:7.1f}/s = {share:6.1%} of R  {'OK' if ok else 'MISS'} "
          f"(targets: 0 rejected, >= {TARGET_SHARE:.0%})", flush=True)
    missed = sum(r["missed"] for r in reports)
    print(f"          slots given up (late) {missed}, reservations {sum(r['reservations'] for r in reports)}, "
          f"clock uncertainty ms {[r['clock_uncertainty_ms'] for r in reports]}", flush=True)
    return ok


def bench_sqlite(rate: int, seconds: float, workers: int) -> bool:
    from clarion.migrate import upgrade

    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "bench.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
        # WAL is persistent: switched once here, the workers' connect-time PRAGMA is a no-op instead of a
        # race between processes for the lock that switching takes.
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        return run(url, "sqlite", rate, seconds, workers)


def bench_postgres(rate: int, seconds: float, workers: int) -> bool:
    import psycopg

    from clarion.migrate import upgrade

    name = f"clarion_bench_throttle_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
        upgrade(url)
        return run(url, "postgres", rate, seconds, workers)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    # Internal: the roles of the child processes.
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.rate))
        return
    if args.work:
        asyncio.run(work(args.url, args.port, args.key, args.rate, args.seconds, args.start_at))
        return
    results = []
    if args.db in ("sqlite", "both"):
        results.append(bench_sqlite(args.rate, args.seconds, args.workers))
    if args.db in ("postgres", "both"):
        results.append(bench_postgres(args.rate, args.seconds, args.workers))
    raise SystemExit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
