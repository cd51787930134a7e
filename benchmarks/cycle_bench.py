"""Benchmark: N trials through the real cycle against a local stand-in API.

The trials are clones of recorded real records (tests/fixtures/studies and the demo history)
under new ids. The stand-in runs in a child process, so the CPU and memory figures are the
monitor's alone. Cycles: the baseline (first sight), one where every record comes back with
only a new daily versionHolder (nothing changed), and one where 5% of the trials moved to their
next real recorded version.

    python benchmarks/cycle_bench.py [--trials 10000] [--changed 0.05] [--batch-size 100]

Targets (2 cores): <= 0.02 requests per trial per cycle; an unchanged trial costs <= ~2x parsing
its JSON; < 60 CPU-seconds per cycle for 10,000 trials; peak memory < 300 MB; a new version
stored in < 15% of its raw JSON size.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor import app  # noqa: E402
from monitor.config import Config, SourceConfig, StorageConfig  # noqa: E402
from monitor.cycle import run_cycle  # noqa: E402
from monitor.storage import utcnow  # noqa: E402

HISTORY = ROOT / "monitor" / "demo_data" / "history"
STUDIES = ROOT / "tests" / "fixtures" / "studies"


def templates() -> list[list[dict[str, Any]]]:
    """Each template is the list of successive real versions of one record."""
    out = [
        [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        for folder in sorted(HISTORY.iterdir())
        if folder.is_dir()
    ]
    out += [[json.loads(p.read_text())] for p in sorted(STUDIES.glob("*.json"))]
    return out


def clone(study: dict[str, Any], nct_id: str, holder: str) -> dict[str, Any]:
    copied = copy.deepcopy(study)
    copied["protocolSection"]["identificationModule"]["nctId"] = nct_id
    copied["protocolSection"]["identificationModule"].pop("nctIdAliases", None)
    misc = copied.setdefault("derivedSection", {}).setdefault("miscInfoModule", {})
    misc["versionHolder"] = holder
    return copied


def serve(conn: Any, n: int) -> None:
    """Child process: a stand-in API with n cloned trials, driven by commands on a pipe."""
    from monitor.standin import StandIn

    tpls = templates()
    plan = [(f"NCT8{i:07d}", i % len(tpls)) for i in range(n)]
    position = {nct: 0 for nct, _ in plan}
    holder = "2026-03-01"
    with StandIn() as api:
        for nct, t in plan:
            api.put(clone(tpls[t][0], nct, holder))
        conn.send(api.base_url)
        while True:
            command, arg = conn.recv()
            if command == "stop":
                return
            if command == "new_day":
                holder = arg
                for nct, t in plan:
                    api.put(clone(tpls[t][position[nct]], nct, holder))
                conn.send(len(plan))
            elif command == "advance":
                movable = [(nct, t) for nct, t in plan if position[nct] + 1 < len(tpls[t])]
                chosen = random.Random(7).sample(movable, min(arg, len(movable)))
                for nct, t in chosen:
                    position[nct] += 1
                    api.put(clone(tpls[t][position[nct]], nct, holder))
                conn.send(len(chosen))


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def parse_cost(base_url: str, ids: list[str], batch_size: int) -> float:
    """CPU seconds orjson needs to parse the page bodies a cycle receives (best of 3)."""
    import httpx

    with httpx.Client(timeout=60) as client:
        bodies = [
            client.get(
                f"{base_url}/studies",
                params={"filter.ids": ",".join(ids[i : i + batch_size]), "pageSize": batch_size},
            ).content
            for i in range(0, len(ids), batch_size)
        ]
    timings = []
    for _ in range(3):
        start = time.process_time()
        for body in bodies:
            orjson.loads(body)
        timings.append(time.process_time() - start)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--changed", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    here, there = mp.Pipe()
    child = mp.get_context("fork").Process(target=serve, args=(there, args.trials), daemon=True)
    child.start()
    base_url = here.recv()
    tmp = Path(tempfile.mkdtemp(prefix="trial-monitor-bench-"))
    db = tmp / "bench.db"
    cfg = Config(
        source=SourceConfig(base_url=base_url, pace=0.0, batch_size=args.batch_size),
        storage=StorageConfig(database=str(db)),
    )
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    rows = []
    ids = [f"NCT8{i:07d}" for i in range(args.trials)]
    with app.open_store(cfg) as store, app.make_fetcher(cfg) as fetcher:
        store.add_trials(ids, utcnow())
        steps = [
            ("baseline (first sight)", None),
            ("nothing changed (new versionHolder)", ("new_day", "2026-03-02")),
            (f"{args.changed:.0%} changed", ("advance", int(args.trials * args.changed))),
        ]
        for label, command in steps:
            if command:
                here.send(command)
                here.recv()
            size_before = db_bytes(db)
            versions_before = store.db.execute(
                "select count(*), coalesce(sum(raw_size),0) from versions"
            ).fetchone()
            cpu, wall = time.process_time(), time.perf_counter()
            summary = run_cycle(store, fetcher)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            store.db.execute("pragma wal_checkpoint(truncate)")
            count, raw = store.db.execute(
                "select count(*), coalesce(sum(raw_size),0) from versions"
            ).fetchone()
            new_versions, new_raw = count - versions_before[0], raw - versions_before[1]
            grown = db_bytes(db) - size_before
            rows.append(
                {
                    "cycle": label,
                    "requests_per_trial": summary.requests / args.trials,
                    "cpu_s": cpu,
                    "wall_s": wall,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "new_versions": new_versions,
                    "changed": summary.changed,
                    "db_bytes_per_version": grown / new_versions if new_versions else None,
                    "raw_bytes_per_version": new_raw / new_versions if new_versions else None,
                }
            )
    parse = parse_cost(base_url, ids, args.batch_size)
    here.send(("stop", None))
    child.join(5)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}"
    )
    print(
        f"trials: {args.trials}, batch size: {args.batch_size}; orjson parse of one cycle's "
        f"page bodies: {parse:.2f} CPU-s"
    )
    print()
    print(
        "| cycle | req/trial | CPU s | wall s | peak RSS MB | new versions | "
        "DB bytes/version (raw) | stored/raw |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        per = r["db_bytes_per_version"]
        ratio = f"{per / r['raw_bytes_per_version']:.1%}" if per is not None else "—"
        size = f"{per:,.0f} ({r['raw_bytes_per_version']:,.0f})" if per is not None else "—"
        print(
            f"| {r['cycle']} | {r['requests_per_trial']:.3f} | {r['cpu_s']:.1f} | "
            f"{r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['new_versions']} | {size} | "
            f"{ratio} |"
        )
    unchanged = rows[1]
    print()
    print(f"unchanged cycle CPU / JSON parse CPU: {unchanged['cpu_s'] / parse:.2f}x")
    print(f"database file: {db_bytes(db) / 1e6:.1f} MB at {db}")


if __name__ == "__main__":
    main()
