"""Bench: the shared throughput limit against a provider that punishes every excess message.

    python -m bench.throttle [--rate R ...] [--workers W ...] [--seconds S] [--repeat N]
                             [--db sqlite|postgres|both] [--client raw|httpx]

The fake provider (a small HTTP/1.1 server in its own process) applies the strict rule: it answers 429 to any
request that would make more than R accepted requests in a sliding 1-second window, i.e. the (R+1)-th
request within any 1 s, on the clock of the request's *arrival*: the kernel's receive timestamp
(SO_TIMESTAMPNS), as a provider's own servers would see it, not the moment this busy machine gets round to
the request. It also reports what the same rule on its processing clock would have rejected.

W worker processes, each with its own engine on one freshly migrated database, warm up (a pooled database
connection that has written, open connections to the provider), then all start at one agreed moment and
send POSTs through delivery.throttle.Throttle for S seconds. The figure is the requests the provider accepted
in those S seconds, per second, against R (the baseline is the limit itself); targets: 0 rejections, and at
least 97% of R. By default the workers send with a minimal keep-alive HTTP/1.1 client, so that the
sender's own CPU cost does not decide the figure: httpx costs 2.3-2.7 ms of CPU per request in this bench,
more than a core at 500/s; `--client httpx` sends with it instead.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import itertools
import json
import os
import selectors
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import migrated_sqlite, postgres_database

TARGET_SHARE = 0.97
# Linux's SO_TIMESTAMPNS (and SCM_TIMESTAMPNS): the socket module does not name it.
SO_TIMESTAMPNS = 35


# --- the fake provider ------------------------------------------------------------------------------------

class SlidingWindow:
    """Admits a request unless accepting it would put R + 1 accepted requests in some 1-second window."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.accepted: list[float] = []  # sorted
        self.rejected = 0

    def admit(self, at: float) -> bool:
        times, rate = self.accepted, self.rate
        # Requests on different connections may be read slightly out of their arrival order: check every run
        # of R + 1 consecutive accepted times that would include this one (only one when it is the latest).
        p = bisect.bisect_right(times, at)

        def nth(k: int) -> float:
            return times[k] if k < p else at if k == p else times[k - 1]

        for j in range(max(0, p - rate), min(p, len(times) - rate) + 1):
            if nth(j + rate) - nth(j) < 1.0:
                self.rejected += 1
                return False
        times.insert(p, at)
        if len(times) > 4 * rate + 100:
            del times[: len(times) - 3 * rate]
        return True


class FakeProvider:
    def __init__(self, rate: int) -> None:
        self.arrival = SlidingWindow(rate)
        self.processing = SlidingWindow(rate)  # shown, not applied
        self.lags: list[float] = []
        self.accepted = 0
        self.arrivals: list[float] = []  # of the accepted requests
        self.kernel_timestamps = False

    def answer(self, request_line: str, arrived: float, now: float) -> tuple[str, bytes]:
        if request_line.startswith("GET /stats"):
            return "200 OK", json.dumps(self.stats()).encode()
        self.lags.append(now - arrived)
        self.processing.admit(now)
        if not self.arrival.admit(arrived):
            return "429 Too Many Requests", b'{"ok":false}'
        self.accepted += 1
        self.arrivals.append(arrived)
        return "200 OK", b'{"ok":true}'

    def stats(self) -> dict[str, Any]:
        lags = sorted(self.lags)

        def quantile(q: float) -> float | None:
            return round(lags[int(q * (len(lags) - 1))] * 1e3, 2) if lags else None

        return {"accepted": self.accepted,
                "rejected": self.arrival.rejected, "rejected_on_processing_clock": self.processing.rejected,
                "kernel_timestamps": self.kernel_timestamps,
                "lag_ms": {"p50": quantile(0.5), "p99": quantile(0.99), "max": quantile(1.0)},
                "arrivals": self.arrivals}


def serve(rate: int) -> None:
    """One thread, non-blocking sockets: reads each request with the kernel's timestamp of its arrival."""
    provider = FakeProvider(rate)
    selector = selectors.DefaultSelector()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ, None)
    buffers: dict[socket.socket, bytes] = {}
    print(listener.getsockname()[1], flush=True)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                conn, _ = listener.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    conn.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                except OSError:
                    pass  # not Linux: the processing clock stands in for the arrival clock
                buffers[conn] = b""
                selector.register(conn, selectors.EVENT_READ, True)
                continue
            conn = key.fileobj  # type: ignore[assignment]
            try:
                data, ancillary, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(16))
            except (ConnectionError, BlockingIOError):
                data, ancillary = b"", []
            if not data:
                selector.unregister(conn)
                conn.close()
                buffers.pop(conn, None)
                continue
            now = time.time()
            arrived = now
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                    seconds, nanoseconds = struct.unpack("qq", payload[:16])
                    arrived = seconds + nanoseconds * 1e-9
                    provider.kernel_timestamps = True
            buffer = buffers[conn] + data
            out = b""
            while (end := buffer.find(b"\r\n\r\n")) >= 0:
                head = buffer[:end].decode("latin-1")
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if len(buffer) < end + 4 + length:
                    break
                buffer = buffer[end + 4 + length:]
                status, body = provider.answer(head.split("\r\n", 1)[0], arrived, now)
                out += (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                        f"content-length: {len(body)}\r\n\r\n").encode() + body
            buffers[conn] = buffer
            if out:
                conn.sendall(out)


# --- the senders' HTTP clients ------------------------------------------------------------------------------

class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(int(head.split(" ", 2)[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the provider closed the connection"))


class RawClient:
    """The least an HTTP/1.1 sender does: the request is written in the same step as the call (no await
    before it), so a start reaches the provider as soon as the throttle lets it go."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        _, connection = await asyncio.get_running_loop().create_connection(_Connection, "127.0.0.1", self.port)
        return connection

    async def open(self, connections: int) -> None:
        self.idle += await asyncio.gather(*(self._connect() for _ in range(connections)))

    async def post(self, path: str, body: bytes) -> int:
        connection = self.idle.pop() if self.idle else await self._connect()
        assert connection.transport is not None
        connection.waiter = asyncio.get_running_loop().create_future()
        connection.transport.write(f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\n"
                                   f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
                                   .encode() + body)
        status = await connection.waiter
        self.idle.append(connection)
        return status

    def close(self) -> None:
        for connection in self.idle:
            if connection.transport is not None:
                connection.transport.close()


# --- one worker process -------------------------------------------------------------------------------------

async def work(url: str, port: int, key: str, rate: float, seconds: float, client: str,
               tuning: dict[str, float]) -> None:
    import httpx

    from clarion.db import Database
    from clarion.delivery.throttle import Throttle, database_clock, reserve

    database = Database(url)
    statuses: collections.Counter[int] = collections.Counter()
    body = b'{"to":"+15550100"}'
    # Warm up before the clock starts, as a long-running worker is: a pooled database connection that has
    # written (a reservation on a key of its own), the clock mapping, and open keep-alive connections to the
    # provider (GET /stats is not counted).
    await database_clock(database).probe(database, times=5)
    for _ in range(3):  # (the first write of a process is slow; its round trip would set the lead)
        await reserve(database, f"{key}:warm-up:{os.getpid()}", 1, rate)
    raw = RawClient(port)
    pool = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                             limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))
    if client == "raw":
        await raw.open(32)
    else:
        await asyncio.gather(*(pool.get("/stats") for _ in range(8)))
    print("ready", flush=True)
    start_at = float(await asyncio.to_thread(sys.stdin.readline))

    async def send_one(n: int) -> int:
        if client == "raw":
            status = await raw.post("/send", body)
        else:
            status = (await pool.post("/send", content=body)).status_code
        statuses[status] += 1
        return status

    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu = time.process_time()
    throttle = Throttle(database, key, rate, **tuning)
    try:
        await asyncio.wait_for(throttle.send(range(int(rate * seconds) + 1), send_one), seconds)
    except TimeoutError:
        pass  # the run is over; whatever was reserved and unsent is simply not sent
    cpu = time.process_time() - cpu
    stats = throttle.stats
    bounds = throttle.clock.bounds()
    raw.close()
    await pool.aclose()
    await database.dispose()
    print(json.dumps({"statuses": dict(statuses), "sent": stats.sent, "cpu_s": cpu,
                      "caught_up": stats.caught_up, "missed": stats.missed,
                      "reservations": stats.reservations, "probes": stats.probes,
                      "clock_uncertainty_ms": None if bounds is None else round((bounds[1] - bounds[0]) * 1e3, 3)}),
          flush=True)


# --- the driver ---------------------------------------------------------------------------------------------

def run(url: str, label: str, rate: int, seconds: float, workers: int, client: str,
        tuning: list[str]) -> dict[str, Any]:
    import httpx

    server = subprocess.Popen([sys.executable, "-m", "bench.throttle", "--serve", "--rate", str(rate)],
                              stdout=subprocess.PIPE, text=True)
    procs: list[subprocess.Popen[str]] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        key = f"bench:{uuid.uuid4()}"
        procs += [subprocess.Popen([sys.executable, "-m", "bench.throttle", "--work", "--url", url, "--port",
                                    str(port), "--key", key, "--rate", str(rate), "--seconds", str(seconds),
                                    "--client", client, *tuning], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True)
                  for _ in range(workers)]
        for proc in procs:  # every worker imported, connected and warmed up: then one start for all
            assert proc.stdout is not None and proc.stdin is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("a worker failed to start")
        start_at = time.time() + 0.3
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start_at}\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"a worker failed with exit code {proc.returncode}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        stats = httpx.get(f"http://127.0.0.1:{port}/stats").json()
    finally:
        for proc in [*procs, server]:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    if not stats["kernel_timestamps"]:
        print("warning: no kernel receive timestamps here; the provider judged on its processing clock")
    rejected = stats["rejected"]
    # What the provider accepted in the S seconds from the agreed start: the first slot's lead and every
    # worker's own late start count against the figure, sends after the end do not count for it.
    arrivals = sorted(t for t in stats["arrivals"] if start_at <= t < start_at + seconds)
    accepted = len(arrivals)
    share = accepted / seconds / rate
    ok = rejected == 0 and share >= TARGET_SHARE
    gaps = sorted((b - a for a, b in itertools.pairwise(arrivals)), reverse=True)[:3]
    result = {"db": label, "rate": rate, "workers": workers, "accepted": accepted, "rejected": rejected,
              "share": share, "ok": ok, "caught_up": sum(r["caught_up"] for r in reports),
              "missed": sum(r["missed"] for r in reports), "reservations": sum(r["reservations"] for r in reports),
              "rejected_on_processing_clock": stats["rejected_on_processing_clock"], "lag_ms": stats["lag_ms"],
              "kernel_timestamps": stats["kernel_timestamps"],
              "first_ms": round((arrivals[0] - start_at) * 1e3, 1) if arrivals else None,
              "cpu_us_per_send": round(sum(r["cpu_s"] for r in reports) / max(1, sum(r["sent"] for r in reports)) * 1e6),
              "load": os.getloadavg()[0],
              "longest_gaps_ms": [round(g * 1e3, 1) for g in gaps]}
    print(f"{label:9} R={rate:<5} W={workers} {seconds:>4.0f}s  accepted {accepted:>6}  rejected {rejected:>3}  "
          f"{share:6.1%} of R  {'OK' if ok else 'MISS'}  | caught up {result['caught_up']:>3}, given up "
          f"{result['missed']:>3}, reservations {result['reservations']:>3}, first after {result['first_ms']} ms, "
          f"longest gaps {result['longest_gaps_ms']} ms, worker CPU {result['cpu_us_per_send']} µs/send; "
          f"on the processing clock "
          f"{result['rejected_on_processing_clock']} rejected (lag p99 {stats['lag_ms']['p99']} ms, "
          f"max {stats['lag_ms']['max']} ms); load {result['load']:.1f}", flush=True)
    return result


@contextlib.contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "bench.db"
        url = migrated_sqlite(path)
        # WAL is persistent: switched once here, the workers' connect-time PRAGMA is a no-op instead of a
        # race between processes for the lock that switching takes.
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        yield url


def summarise(results: list[dict[str, Any]]) -> None:
    print("\nsummary (share of R accepted, min–max over runs; rejections, max)")
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = collections.defaultdict(list)
    for result in results:
        groups[(result["db"], result["rate"], result["workers"])].append(result)
    for (label, rate, workers), runs in groups.items():
        shares = [r["share"] for r in runs]
        loads = [r["load"] for r in runs]
        print(f"{label:9} R={rate:<5} W={workers}  {min(shares):6.1%} – {max(shares):6.1%} "
              f"(median {statistics.median(shares):6.1%}, {len(runs)} runs)  rejected max "
              f"{max(r['rejected'] for r in runs)}  load {min(loads):.1f}–{max(loads):.1f}  "
              f"{'OK' if all(r['ok'] for r in runs) else 'MISS'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    # The throttle's tuning, to explore it (default: the library's defaults).
    parser.add_argument("--headroom", type=float)
    parser.add_argument("--on-time", type=float)
    parser.add_argument("--chunk-seconds", type=float)
    # Internal: the roles of the child processes.
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.rate[0])
        return
    if args.work:
        tuning = {name: getattr(args, name) for name in ("headroom", "on_time", "chunk_seconds")
                  if getattr(args, name) is not None}
        asyncio.run(work(args.url, args.port, args.key, args.rate[0], args.seconds, args.client, tuning))
        return
    tuning = [arg for name in ("headroom", "on_time", "chunk_seconds") if getattr(args, name) is not None
              for arg in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]
    with contextlib.ExitStack() as stack:
        databases = []
        if args.db in ("sqlite", "both"):
            databases.append(("sqlite", stack.enter_context(sqlite_database())))
        if args.db in ("postgres", "both"):
            databases.append(("postgres", stack.enter_context(postgres_database("clarion_bench_throttle"))[0]))
        # The databases take turns, run by run, so that both see the same spells of load from the neighbours.
        results = [run(url, label, rate, args.seconds, workers, args.client, tuning)
                   for _ in range(args.repeat) for rate in args.rate for workers in args.workers
                   for label, url in databases]
    summarise(results)
    raise SystemExit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
