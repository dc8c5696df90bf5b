from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from clarion.config import get_settings

if TYPE_CHECKING:
    from clarion.audience.schemas import ImportResult

app = typer.Typer(help="Clarion: multi-channel marketing campaigns.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
tenant_app = typer.Typer(help="Tenants and their API keys.", no_args_is_help=True)
import_app = typer.Typer(help="Bulk imports.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(import_app, name="import")
console = Console(stderr=True)


def main() -> None:
    app()


def _default_base_url(host: str, port: int) -> None:
    """Links in messages must point at this server unless CLARION_BASE_URL says where it is really reachable."""
    import os

    if not os.environ.get("CLARION_BASE_URL"):
        os.environ["CLARION_BASE_URL"] = f"http://{host}:{port}"
        get_settings.cache_clear()


def _ensure_schema(*, migrate_sqlite: bool = True) -> None:
    """SQLite (the embedded default) is migrated in place; PostgreSQL must be migrated on purpose."""
    from clarion.migrate import pending_revisions, upgrade

    settings = get_settings()
    settings.resolved_secret_key()  # first start: generate the install's secret into the data dir
    url = settings.resolved_database_url
    if settings.is_sqlite and migrate_sqlite:
        upgrade(url)
        return
    current, head = pending_revisions(url)
    if current != head:
        console.print(f"[red]The database schema is at {current or 'nothing'}, Clarion needs {head}.[/red] "
                      "Run `clarion migrate` first.")
        raise typer.Exit(code=2)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from clarion.migrate import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    console.print("[green]schema up to date[/green]")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    worker: bool = typer.Option(True, "--worker/--no-worker", help="Run a background worker in this process"),
) -> None:
    """Serve the API (with an embedded background worker unless --no-worker)."""
    import uvicorn

    from clarion.app import create_app

    _default_base_url(host, port)
    _ensure_schema()
    _log_to_stderr()
    uvicorn.run(create_app(embedded_worker=worker), host=host, port=port, log_level="info")


@app.command("worker")
def worker_command(
    concurrency: int = typer.Option(None, help="Jobs run at once (default: CLARION_WORKER_CONCURRENCY)"),
) -> None:
    """Run background jobs and periodic ticks until SIGTERM or Ctrl-C; any number may share one PostgreSQL."""
    _ensure_schema()
    _log_to_stderr()
    asyncio.run(_run_worker(concurrency))


def _log_to_stderr() -> None:
    """Clarion's own loggers (the worker's above all) to stderr; uvicorn keeps its own handlers."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: a line per message sent and per status webhook a sandbox posts.
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def _run_worker(concurrency: int | None) -> None:
    import signal

    import clarion.api  # noqa: F401 - importing the route table imports every domain, which registers its jobs
    from clarion.db import Database
    from clarion.kit.interpreter import freeze_startup_objects
    from clarion.worker import Worker

    settings = get_settings()
    db = Database(settings.resolved_database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    freeze_startup_objects()
    try:
        await Worker(db, settings=settings, concurrency=concurrency).run(stop)
    finally:
        await db.dispose()


@tenant_app.command("create")
def tenant_create(
    name: str,
    plan: str = typer.Option("starter", help="starter | professional | business | enterprise"),
    default_region: str = typer.Option(None, help="ISO region for phone numbers without country code"),
    as_json: bool = typer.Option(False, "--json", help="Print {tenant_id, api_key} as JSON"),
) -> None:
    """Create a tenant and its first API key (shown once)."""
    _ensure_schema()
    tenant_id, key = asyncio.run(_create_tenant(name, plan, default_region))
    if as_json:
        typer.echo(json.dumps({"tenant_id": str(tenant_id), "api_key": key}))
    else:
        typer.echo(f"tenant_id: {tenant_id}\napi_key:   {key}\n(the key is shown once; store it now)")


async def _create_tenant(name: str, plan: str, default_region: str | None) -> tuple[uuid.UUID, str]:
    from clarion.db import Database
    from clarion.tenancy import service
    from clarion.tenancy.schemas import ApiKeyCreate

    db = Database(get_settings().resolved_database_url)
    try:
        async with db.transaction() as session:
            tenant = await service.create_tenant(session, name, plan=plan,
                                                 default_region=default_region.upper() if default_region else None)
            _, key = await service.create_api_key(session, tenant.id, ApiKeyCreate(name="default"))
            return tenant.id, key
    finally:
        await db.dispose()


@app.command("vapid-keys")
def vapid_keys() -> None:
    """Print a fresh VAPID key pair (Web Push) as JSON, ready for the config of a webpush channel:
    POST /api/v1/channels {"channel": "push", "provider": "webpush", "config": {…these keys…, "vapid_subject":
    "mailto:you@example.com"}}. Nothing is stored: keep the private key as you would a password."""
    from clarion.delivery.channels.webpush import generate_vapid_keys

    print(json.dumps(generate_vapid_keys(), indent=2))


@app.command()
def demo(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    contacts: int = typer.Option(5000, help="How many demo contacts to seed"),
    serve_after: bool = typer.Option(True, "--serve/--no-serve", help="Serve the API after seeding"),
) -> None:
    """Migrate, seed a demo tenant (contacts, segments, templates, campaigns), print the URL and a key, serve."""
    import os

    import uvicorn

    from clarion.app import create_app

    _default_base_url(host, port)
    # The demo's WhatsApp and SMS channels send through the sandboxes the server mounts under /sandbox/.
    os.environ["CLARION_SANDBOX_PROVIDERS"] = "true"
    get_settings.cache_clear()
    _ensure_schema()
    settings = get_settings()
    demo_tenant = asyncio.run(_seed_demo(contacts))
    url = f"http://{host}:{port}"
    from clarion.cli.demo import print_banner

    print_banner(Console(), url, demo_tenant, settings.data_dir)
    if serve_after:
        _log_to_stderr()
        uvicorn.run(create_app(embedded_worker=True), host=host, port=port, log_level="warning")


async def _seed_demo(contacts: int):  # type: ignore[no-untyped-def]
    import httpx

    from clarion.app import create_app
    from clarion.cli.demo import ensure_demo_tenant, remember_demo, seed
    from clarion.db import Database

    settings = get_settings()
    db = Database(settings.resolved_database_url)
    try:
        demo_tenant = await ensure_demo_tenant(settings, db)
        if not demo_tenant.seeded:
            app = create_app(settings, database=db)
            headers = {"Authorization": f"Bearer {demo_tenant.api_key}"}
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.base_url,
                                         headers=headers, timeout=300) as api:
                with console.status(f"Seeding the demo tenant: {contacts} contacts, segments, templates, campaigns…"):
                    seeded = await seed(api, contacts, base_url=settings.base_url)
            demo_tenant.sending_campaign_id = seeded["sending"]
            demo_tenant.whatsapp_campaign_id, demo_tenant.sms_campaign_id = seeded["whatsapp"], seeded["sms"]
            remember_demo(settings, demo_tenant)
        return demo_tenant
    finally:
        await db.dispose()


@import_app.command("contacts")
def import_contacts(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV file (UTF-8)")],
    tenant: Annotated[uuid.UUID, typer.Option("--tenant", help="Tenant id to import into")],
) -> None:
    """Upsert contacts from a CSV file (by email, else phone); prints {created, updated, rejected} as JSON."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from clarion.errors import ClarionError, Unauthorized

    _ensure_schema()
    progress = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), console=console)
    with progress:
        task = progress.add_task("importing", total=file.stat().st_size)
        try:
            result = asyncio.run(_import_contacts(file, tenant, lambda done: progress.update(task, completed=done)))
        except ClarionError as exc:
            progress.stop()
            message = f"no tenant {tenant}" if isinstance(exc, Unauthorized) else exc.message
            console.print(f"[red]{message}[/red]")
            raise typer.Exit(code=1) from exc
        progress.update(task, completed=file.stat().st_size)
    typer.echo(result.model_dump_json())


async def _import_contacts(file: Path, tenant_id: uuid.UUID, on_progress: Callable[[int], None]) -> ImportResult:
    from clarion.audience import service
    from clarion.db import Database

    settings = get_settings()
    db = Database(settings.resolved_database_url)
    try:
        async with db.transaction() as session:
            # Unlike an HTTP request, the CLI commits after every chunk: a million-row file must not become one
            # giant transaction (locks, WAL growth, a rollback of everything on the last row's failure).
            with file.open("rb") as binary:
                return await service.import_contacts(session, tenant_id, binary,
                                                     chunk_rows=settings.import_chunk_rows,
                                                     after_chunk=session.commit, on_progress=on_progress)
    finally:
        await db.dispose()
