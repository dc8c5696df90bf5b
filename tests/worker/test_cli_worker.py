"""`clarion worker` as an operator runs it: a real process on a fresh SQLite data dir, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import select

from clarion.db import Database
from clarion.models.jobs import WorkerTick
from clarion.worker import enqueue, get_job


async def _wait_until(predicate, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early ({proc.returncode}):\n{log.read_text()}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {predicate.__name__}:\n{log.read_text()}")
        await asyncio.sleep(0.05)


async def test_clarion_worker_runs_jobs_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(CLARION_DATA_DIR=str(tmp_path), CLARION_WORKER_POLL_INTERVAL="0.05")
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - starting it is instant; the test then polls the database
            [sys.executable, "-m", "clarion.cli", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'clarion.db'}")
    try:
        async def started() -> bool:
            return "started" in log.read_text()

        await _wait_until(started, 60, proc, log)
        # A job no module registers: the worker claims it and records why it cannot run it.
        async with db.transaction() as session:
            job_id = await enqueue(session, "nobody.registers.this", {"n": 1}, max_attempts=1)

        async def job_dead() -> bool:
            async with db.transaction() as session:
                job = await get_job(session, job_id)
            return job is not None and job.status == "dead"

        await _wait_until(job_dead, 30, proc, log)
        async with db.transaction() as session:
            job = await get_job(session, job_id)
            ticks = set((await session.execute(select(WorkerTick.name))).scalars())
        assert job is not None and "no job is registered under 'nobody.registers.this'" in (job.last_error or "")
        assert "worker.prune_succeeded_jobs" in ticks

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
        assert "stopped after 1 jobs" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await db.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tmp_path: Path, *extra: str) -> str:
    """Run `clarion serve`, wait until it answers, stop it with SIGTERM; return its log."""
    port = _free_port()
    log = tmp_path / f"serve-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(CLARION_DATA_DIR=str(tmp_path), CLARION_WORKER_POLL_INTERVAL="0.05")
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "clarion.cli", "serve", "--port", str(port), *extra],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        # Uvicorn shuts down gracefully, then re-raises the signal it caught, so the exit status names SIGTERM.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log.read_text()


def test_serve_embeds_a_worker_by_default_and_not_with_no_worker(tmp_path: Path) -> None:
    with_worker = _serve(tmp_path)
    assert "clarion.worker: worker" in with_worker and "started" in with_worker
    assert "stopped after" in with_worker
    assert with_worker.index("stopped after") < with_worker.index("Application shutdown complete")

    api_only = _serve(tmp_path, "--no-worker")
    assert "clarion.worker" not in api_only
