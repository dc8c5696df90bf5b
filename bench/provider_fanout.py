"""Bench: the HTTP channel providers' fan-out against a provider's real latency.

    python -m bench.provider_fanout [--providers whatsapp twilio telegram webpush] [--messages N]
                                    [--concurrency C] [--latency S] [--rounds R]

Each provider's sandbox (clarion.sandbox) runs in a process of its own under uvicorn, answering every API call
after `--latency` seconds (SandboxControl.latency_seconds; 0.2 s by default, a provider's API across an ocean).
Against it, in this process, alternately in R rounds (the order flips each round, so a neighbour's load hurts
both sides alike):

  * provider: `provider.send(batch)` of N messages through the Clarion provider, max_concurrency = C;
  * bare:     a plain httpx.AsyncClient loop, C workers pulling from the same N requests built beforehand (same
              URL, headers and body as the provider sends), over a pool of C connections.

Both sides are warmed up (C connections open) first. The figure is messages/s of each side and their ratio;
the target is a provider at ≥ 90% of the bare loop. At latency L the ceiling is C / L messages/s for both: what
the ratio shows is the provider's own cost per message (building the request, reading the answer, its result)
getting in the way of keeping C requests in flight. Web Push encrypts every message (RFC 8291) and the bare loop
sends bodies encrypted beforehand: its ratio includes that cost, which is the protocol's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import httpx

TARGET_SHARE = 0.90
PROVIDERS = ("whatsapp", "twilio", "telegram", "webpush")
WHATSAPP_TEMPLATE = {"name": "spring_sale", "language": {"code": "en_US"},
                     "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ada"}]}]}
SMS_TEXT = "Ada: spring sale, 20% off today only. Reply STOP to opt out."
TELEGRAM_HTML = "<b>Spring sale</b>: 20% off &amp; free delivery today"
PUSH_FIELDS = {"title": "Spring sale", "url": "https://shop.example/sale"}
PUSH_SUBSCRIPTIONS = 200  # browsers the push sandbox makes; messages go to them in turn


# --- the sandbox process ------------------------------------------------------------------------------------

def serve(provider: str, latency: float, vapid_public_key: str | None) -> None:
    """Serve `provider`'s sandbox on a free port; print {"url", "subscriptions"} as one JSON line, then serve."""
    import uvicorn

    from clarion.sandbox import telegram, twilio, webpush, whatsapp
    from clarion.sandbox.control import SandboxControl

    control = SandboxControl(latency_seconds=latency)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    subscriptions: list[dict[str, Any]] = []
    if provider == "whatsapp":
        app = whatsapp.create_app(control)
    elif provider == "twilio":
        app = twilio.create_app(control)
    elif provider == "telegram":
        app = telegram.create_app(control)
    else:
        service = webpush.PushService()
        subscriptions = [service.subscribe(url, application_server_key=vapid_public_key).to_json()
                         for _ in range(PUSH_SUBSCRIPTIONS)]
        app = webpush.create_app(control, service)
    print(json.dumps({"url": url, "subscriptions": subscriptions}), flush=True)
    # Connections idle while the other side runs its round: uvicorn's 5 s keep-alive would close some of them just
    # as a client reuses them.
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, backlog=4096,
                                  timeout_keep_alive=600)).run(sockets=[sock])


class Sandbox:
    """A provider's sandbox in its own process, for as long as the `with` block."""

    def __init__(self, provider: str, latency: float, vapid_public_key: str | None = None) -> None:
        argv = [sys.executable, "-m", "bench.provider_fanout", "--serve", provider, "--latency", str(latency)]
        if vapid_public_key:
            argv += ["--vapid-public-key", vapid_public_key]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        started = json.loads(self.process.stdout.readline())
        self.url: str = started["url"]
        self.subscriptions: list[dict[str, Any]] = started["subscriptions"]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# --- the two sides -----------------------------------------------------------------------------------------

@dataclass
class BareRequest:
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Workload:
    """N messages for the provider, and the same N requests for the bare loop."""

    provider: Any  # a ChannelProvider built for the sandbox
    messages: list[Any]
    requests: list[BareRequest]
    auth: httpx.Auth | None = None


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def whatsapp_workload(url: str, count: int, concurrency: int) -> Workload:
    from clarion.delivery.channels import registry
    from clarion.delivery.channels.base import OutgoingMessage, TextPayload
    from clarion.sandbox.whatsapp import SandboxAccount

    account = SandboxAccount()
    provider = registry.build_provider("whatsapp", {**account.channel_config(url), "max_concurrency": concurrency})
    numbers = [f"4477009{i % 100_000:05d}" for i in range(count)]
    messages = [OutgoingMessage(ref=str(i), to=f"+{n}", channel="whatsapp",
                                payload=TextPayload(text="", fields={"template": WHATSAPP_TEMPLATE}))
                for i, n in enumerate(numbers)]
    endpoint = f"{url}/{provider.config.api_version}/{account.phone_number_id}/messages"
    headers = {"Authorization": f"Bearer {account.access_token}", "Content-Type": "application/json"}
    requests = [BareRequest(endpoint, headers, _json({
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": n, "type": "template",
        "template": WHATSAPP_TEMPLATE, "biz_opaque_callback_data": str(i)})) for i, n in enumerate(numbers)]
    return Workload(provider, messages, requests)


def twilio_workload(url: str, count: int, concurrency: int) -> Workload:
    from urllib.parse import urlencode

    from clarion.delivery.channels import registry
    from clarion.delivery.channels.base import OutgoingMessage, TextPayload
    from clarion.sandbox import twilio

    provider = registry.build_provider("twilio", {
        "account_sid": twilio.DEFAULT_ACCOUNT_SID, "auth_token": twilio.DEFAULT_AUTH_TOKEN,
        "from_number": twilio.DEFAULT_NUMBER, "api_base_url": url, "max_concurrency": concurrency})
    numbers = [f"+1415555{i % 10_000:04d}" for i in range(count)]
    messages = [OutgoingMessage(ref=str(i), to=n, channel="sms", payload=TextPayload(text=SMS_TEXT))
                for i, n in enumerate(numbers)]
    endpoint = f"{url}/2010-04-01/Accounts/{twilio.DEFAULT_ACCOUNT_SID}/Messages.json"
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    requests = [BareRequest(endpoint, headers, urlencode({"To": n, "Body": SMS_TEXT,
                                                          "From": twilio.DEFAULT_NUMBER}).encode())
                for n in numbers]
    return Workload(provider, messages, requests,
                    auth=httpx.BasicAuth(twilio.DEFAULT_ACCOUNT_SID, twilio.DEFAULT_AUTH_TOKEN))


def telegram_workload(url: str, count: int, concurrency: int) -> Workload:
    from clarion.delivery.channels import registry
    from clarion.delivery.channels.base import OutgoingMessage, TextPayload
    from clarion.sandbox import telegram

    provider = registry.build_provider("telegram", {
        "bot_token": telegram.DEFAULT_BOT_TOKEN, "bot_username": telegram.DEFAULT_BOT_USERNAME,
        "webhook_secret_token": telegram.DEFAULT_SECRET_TOKEN, "api_base_url": url, "max_concurrency": concurrency})
    chats = [100_000_000 + i for i in range(count)]
    messages = [OutgoingMessage(ref=str(i), to=str(c), channel="telegram", payload=TextPayload(text=TELEGRAM_HTML))
                for i, c in enumerate(chats)]
    endpoint = f"{url}/bot{telegram.DEFAULT_BOT_TOKEN}/sendMessage"
    headers = {"Content-Type": "application/json"}
    requests = [BareRequest(endpoint, headers, _json({"chat_id": c, "text": TELEGRAM_HTML, "parse_mode": "HTML"}))
                for c in chats]
    return Workload(provider, messages, requests)


def webpush_workload(sandbox: Sandbox, keys: dict[str, str], count: int, concurrency: int) -> Workload:
    from pywebpush import WebPusher

    from clarion.delivery.channels import registry
    from clarion.delivery.channels.base import OutgoingMessage, TextPayload
    from clarion.delivery.channels.webpush.provider import notification

    provider = registry.build_provider("webpush", {
        "vapid_private_key": keys["vapid_private_key"], "vapid_subject": "mailto:push@shop.example", "ttl": 3600,
        "max_concurrency": concurrency})
    subscriptions = sandbox.subscriptions
    messages = [OutgoingMessage(ref=str(i), to=f"contact-{i}", channel="push", payload=TextPayload(
        text="20% off everything today", fields={**PUSH_FIELDS, "subscriptions": [subscriptions[i % len(subscriptions)]]}))
        for i in range(count)]
    # The bare loop replays one encryption per subscription (the sandbox decrypts it as the browser would) and
    # the provider's own VAPID header: the same requests, without the per-message cryptography.
    plaintext = notification(messages[0].payload)
    bodies = [WebPusher(s).encode(plaintext, "aes128gcm")["body"] for s in subscriptions]
    headers = {"TTL": "3600", "Content-Encoding": "aes128gcm", "Content-Type": "application/octet-stream",
               "Urgency": "normal", "Authorization": provider._authorization(sandbox.url)}
    requests = [BareRequest(subscriptions[i % len(subscriptions)]["endpoint"], headers,
                            bodies[i % len(subscriptions)]) for i in range(count)]
    return Workload(provider, messages, requests)


@dataclass
class Sample:
    messages: int
    seconds: float
    cpu_us: float  # this process's CPU per message, µs: what a neighbour's load disturbs least

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


async def provider_rate(workload: Workload, messages: list[Any]) -> Sample:
    started, cpu = time.perf_counter(), time.process_time()
    results = await workload.provider.send(messages)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(results)} provider sends failed, e.g. {failed[0].error}")
    return Sample(len(messages), elapsed, cpu / len(messages) * 1e6)


async def bare_rate(client: httpx.AsyncClient, requests: list[BareRequest], concurrency: int) -> Sample:
    pending = iter(requests)
    refused: list[str] = []

    async def worker() -> None:
        for request in pending:
            response = await client.post(request.url, content=request.body, headers=request.headers)
            if response.status_code >= 300:
                refused.append(f"{response.status_code} {response.text[:200]}")

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if refused:
        raise RuntimeError(f"{len(refused)} of {len(requests)} bare requests were refused, e.g. {refused[0]}")
    return Sample(len(requests), elapsed, cpu / len(requests) * 1e6)


@dataclass
class Figures:
    provider: list[Sample]
    bare: list[Sample]

    def ratios(self) -> list[float]:
        return [p.rate / b.rate for p, b in zip(self.provider, self.bare, strict=True)]

    @staticmethod
    def overall(samples: list[Sample]) -> float:
        return sum(s.messages for s in samples) / sum(s.seconds for s in samples)


async def measure(workload: Workload, concurrency: int, rounds: int,
                  report: Callable[[int, str, Sample], None]) -> Figures:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    figures = Figures([], [])
    async with httpx.AsyncClient(limits=limits, timeout=60.0, auth=workload.auth) as client:
        # Warm-up: both sides open their C connections before anything is timed.
        await provider_rate(workload, workload.messages[:concurrency])
        await bare_rate(client, workload.requests[:concurrency], concurrency)
        try:
            for r in range(rounds):
                order = ("provider", "bare") if r % 2 == 0 else ("bare", "provider")
                for side in order:
                    if side == "provider":
                        sample = await provider_rate(workload, workload.messages)
                        figures.provider.append(sample)
                    else:
                        sample = await bare_rate(client, workload.requests, concurrency)
                        figures.bare.append(sample)
                    report(r + 1, side, sample)
        finally:
            await workload.provider.close()
    return figures


def run_provider(name: str, args: argparse.Namespace) -> Figures:
    keys: dict[str, str] = {}
    if name == "webpush":
        from clarion.delivery.channels.webpush.keys import generate_vapid_keys

        keys = generate_vapid_keys()
    with Sandbox(name, args.latency, keys.get("vapid_public_key")) as sandbox:
        if name == "webpush":
            workload = webpush_workload(sandbox, keys, args.messages, args.concurrency)
        else:
            build = {"whatsapp": whatsapp_workload, "twilio": twilio_workload, "telegram": telegram_workload}[name]
            workload = build(sandbox.url, args.messages, args.concurrency)

        def report(round_: int, side: str, sample: Sample) -> None:
            print(f"  round {round_}  {side:<8} {sample.rate:8.1f} msg/s  {sample.cpu_us:7.0f} µs CPU/message",
                  flush=True)

        return asyncio.run(measure(workload, args.concurrency, args.rounds, report))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    parser.add_argument("--messages", type=int, default=500, help="messages per side per round")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight (the providers' default)")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the sandbox takes to answer")
    parser.add_argument("--rounds", type=int, default=10, help="rounds, each one block per side in turn: many "
                        "short rounds spread a neighbour's load over both sides")
    parser.add_argument("--serve", choices=PROVIDERS, help=argparse.SUPPRESS)
    parser.add_argument("--vapid-public-key", help=argparse.SUPPRESS)
    # `python -m bench` hands every bench the same arguments: other benches' options are not this one's error.
    args, _ = parser.parse_known_args()
    if args.serve:
        serve(args.serve, args.latency, args.vapid_public_key)
        return 0
    ceiling = args.concurrency / args.latency
    print(f"{args.messages} messages per side per round, concurrency {args.concurrency}, latency "
          f"{args.latency * 1000:.0f} ms (ceiling {ceiling:.0f} msg/s), {args.rounds} rounds, order alternating")
    summary = []
    for name in args.providers:
        print(f"{name}:", flush=True)
        figures = run_provider(name, args)
        ratios = sorted(figures.ratios())
        provider, bare = Figures.overall(figures.provider), Figures.overall(figures.bare)
        cpu = (statistics.median(s.cpu_us for s in figures.provider), statistics.median(s.cpu_us for s in figures.bare))
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        summary.append((name, provider, bare, provider / bare, quartiles[0], quartiles[2], cpu))
    # The ratio is of the totals (all messages over all time of each side); the per-round ratios' interquartile
    # range shows how much a neighbour's load moved single rounds.
    print(f"\n{'provider':<10} {'provider msg/s':>15} {'bare msg/s':>11} {'ratio':>7}   {'rounds IQR':>13}   "
          f"{'CPU µs/msg (provider/bare)':>27}   target ≥ {TARGET_SHARE:.0%}")
    for name, provider, bare, ratio, low, high, (cpu_provider, cpu_bare) in summary:
        verdict = "met" if ratio >= TARGET_SHARE else "NOT MET"
        print(f"{name:<10} {provider:>15.1f} {bare:>11.1f} {ratio:>7.1%}   {low:>5.0%}–{high:<6.0%}   "
              f"{cpu_provider:>13.0f} / {cpu_bare:<11.0f}   {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
