"""Run every benchmark in turn: `python -m bench` (each one also runs alone: `python -m bench.<name> --help`)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_")
                   and m.name != "common" and hasattr(importlib.import_module(f"bench.{m.name}"), "main"))
    failed = []
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        # One process per bench: each measures itself against its own baseline in that same process.
        if subprocess.run([sys.executable, "-m", f"bench.{name}", *sys.argv[1:]], check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
