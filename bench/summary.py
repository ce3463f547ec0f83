"""One way for every benchmark to write its JSON summary.

Each summary is ``out/bench_<name>.json`` (unless ``--out`` says otherwise): the benchmark's
own figures, plus a ``run`` block saying where and when they were measured (UTC time, the
commit, the CPU model and its cores), since figures are only comparable within one run on
one machine.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from repository.layout import ROOT


def out_path(name: str) -> Path:
    """The default file of benchmark ``name``: ``out/bench_<name>.json`` in the checkout."""
    return ROOT / "out" / f"bench_{name}.json"


def run_info(name: str) -> dict[str, Any]:
    """Where and when: ``{"bench", "utc", "commit", "cpu", "cores"}`` (commit "" outside git)."""
    from pipeline.precision import cpu_info

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    cpu = cpu_info()
    return {"bench": name, "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit, "cpu": cpu["model"], "cores": cpu["cores"]}


def write(name: str, figures: dict | list, path: Path | str | None = None) -> Path:
    """Write ``figures`` with a ``run`` block (a list becomes ``{"rows": [...]}``) to ``path``
    (default ``out_path(name)``), atomically; returns the path and prints it."""
    path = Path(path) if path is not None else out_path(name)
    body = dict(figures) if isinstance(figures, dict) else {"rows": figures}
    body["run"] = run_info(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path
