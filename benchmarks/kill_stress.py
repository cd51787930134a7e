"""SIGKILL the daemon at random moments of its cycles; check nothing is lost, broken or doubled.

A stand-in API on 127.0.0.1 serves the recorded demo history cloned under many new ids (so a
cycle has real work), with a small delay on every list request so that cycles last long
enough to be hit. For each upstream step (the baseline, then each "next recorded version"):

1. the stand-in moves to the step and bumps its ``dataTimestamp``; a clean in-process
   reference database records the same step with run_cycle;
2. ``trial-monitor run`` is started and SIGKILLed a random time after its cycle starts, N
   times; after each kill, ``PRAGMA integrity_check`` must say ok;
3. ``trial-monitor run`` is started once more, left to finish its cycle, and stopped with
   SIGTERM (exit 0 expected; the time it took is measured);
4. the change log must equal the reference's: the same rows per (trial, version, field,
   change, old, new), each exactly once.

    .venv/bin/python benchmarks/kill_stress.py --kills 200

The test suite (tests/test_daemon_process.py) drives the same harness with fewer kills.
Loopback only; bounded by --kills and --max-seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from monitor import logs
from monitor.config import LoggingConfig
from monitor.cycle import run_cycle
from monitor.demo import HISTORY
from monitor.fetch import Fetcher
from monitor.standin import StandIn
from monitor.storage import Store, utcnow

#: Environment variables that would leak the caller's service or config into the daemon.
_SCRUB = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "TRIAL_MONITOR_CONFIG")


def clone_id(nct_id: str, clone: int) -> str:
    """A distinct, valid NCT id per clone of a recorded trial (NCT9 + 2-digit clone + 5 digits)."""
    return f"NCT9{clone:02d}{nct_id[-5:]}"


def clone_history(dest: Path, clones: int, source: Path = HISTORY) -> list[str]:
    """Write ``clones`` copies of every recorded trial history under new ids; return the ids."""
    ids: list[str] = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        for clone in range(clones):
            new_id = clone_id(folder.name, clone)
            target = dest / new_id
            target.mkdir(parents=True, exist_ok=True)
            for file in sorted(folder.glob("*.json")):
                study = orjson.loads(file.read_bytes())
                ident = study["protocolSection"]["identificationModule"]
                ident["nctId"] = new_id
                ident.pop("nctIdAliases", None)
                (target / file.name).write_bytes(orjson.dumps(study))
            ids.append(new_id)
    return ids


def write_config(
    path: Path,
    base_url: str,
    database: Path,
    *,
    batch_size: int = 10,
    every: str = "1h",
    extra: str = "",
) -> Path:
    """A daemon config for the stand-in: no pacing, no jitter, quick retries."""
    path.write_text(
        "[source]\n"
        f'base_url = "{base_url}"\n'
        f"batch_size = {batch_size}\n"
        'pace = "0s"\n'
        'backoff_initial = "0.05s"\n'
        'backoff_max = "0.2s"\n'
        'timeout = "10s"\n'
        "[storage]\n"
        f'database = "{database}"\n'
        "[schedule]\n"
        f'every = "{every}"\n'
        'jitter = "0s"\n' + extra
    )
    return path


def service_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _SCRUB}


class Service:
    """``python -m monitor run`` as a child process, its JSON log lines collected as they come."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or service_env(),
        )
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self._cond = threading.Condition()
        self._eof = False
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "text", "line": line.decode(errors="replace")}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("event") == name]

    def wait_event(self, name: str, *, count: int = 1, timeout: float = 20.0) -> dict[str, Any]:
        """The ``count``-th event called ``name``; raises TimeoutError (with the log) otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if e.get("event") == name]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    tail = "\n".join(json.dumps(e) for e in self.events[-15:])
                    raise TimeoutError(
                        f"no {name!r} #{count} (exit {self.proc.poll()}):\n{tail}\n"
                        f"{self.stderr.decode(errors='replace')}"
                    )
                self._cond.wait(left)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, float]:
        """Send ``signum`` and wait; returns the exit code and the seconds it took to exit."""
        sent = time.monotonic()
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - sent

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def last_cycle_status(db: Path) -> str | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("select status from cycles order by id desc limit 1").fetchone()
    return None if row is None else str(row[0])


def change_log(db: Path) -> Counter[tuple[Any, ...]]:
    """Every change row, keyed by what it says (not by when or under which row id)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "select c.nct_id, v.hash, c.field, c.change, c.old, c.new, c.baseline "
            "from changes c left join versions v on v.id = c.version_id"
        ).fetchall()
    return Counter(tuple(r) for r in rows)


@dataclass
class Report:
    kills: int = 0
    mid_cycle: int = 0
    steps: int = 0
    change_rows: int = 0
    sigterm_seconds: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        worst = max(self.sigterm_seconds, default=0.0)
        return (
            f"{self.kills} SIGKILLs ({self.mid_cycle} inside a running cycle) over "
            f"{self.steps} upstream steps; integrity_check ok after every kill; "
            f"{self.change_rows} change rows compared with a clean run; "
            f"SIGTERM exits: {len(self.sigterm_seconds)}, slowest {worst:.2f}s; "
            f"problems: {len(self.problems)}"
        )


class KillHarness:
    """The stand-in, the databases and the loop described in the module docstring."""

    def __init__(
        self,
        workdir: Path,
        api: StandIn,
        *,
        clones: int,
        batch_size: int = 10,
        delay: float = 0.03,
        seed: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.api = api
        self.rng = random.Random(seed)
        self.delay = delay
        clone_history(workdir / "history", clones)
        self.ids = api.load_history(workdir / "history")
        self.db = workdir / "killed.db"
        self.config = write_config(
            workdir / "config.toml", api.base_url, self.db, batch_size=batch_size
        )
        with Store(self.db) as store:
            store.add_trials(self.ids, utcnow())
        self.reference = Store(workdir / "reference.db")
        self.reference.add_trials(self.ids, utcnow())
        self.batches = -(-len(self.ids) // batch_size)
        self.report = Report()

    def close(self) -> None:
        self.reference.close()

    def step(self, kills: int, deadline: float) -> None:
        """Move upstream one step, kill ``kills`` daemons mid-cycle, finish, compare."""
        report = self.report
        if report.steps:
            self.api.advance_all()
        report.steps += 1
        self.api.data_timestamp = f"2026-09-{report.steps:02d}T09:00:00"
        self.api.clear_faults()
        with Fetcher(self.api.base_url, batch_size=500, pace=0) as fetcher:
            run_cycle(self.reference, fetcher)
        self.api.delay(self.delay, kind="list", times=1_000_000)
        cycle_seconds = self.batches * self.delay
        for _ in range(kills):
            if time.monotonic() > deadline:
                report.problems.append("stopped early: --max-seconds reached")
                break
            service = Service(self.config)
            service.wait_event("cycle.start")
            time.sleep(self.rng.uniform(0, cycle_seconds))
            service.kill()
            report.kills += 1
            report.mid_cycle += last_cycle_status(self.db) == "running"
            if (verdict := integrity(self.db)) != "ok":
                report.problems.append(f"integrity_check after kill {report.kills}: {verdict}")
        service = Service(self.config)
        service.wait_event("cycle.done", timeout=60)
        code, seconds = service.stop(signal.SIGTERM)
        report.sigterm_seconds.append(seconds)
        if code != 0:
            report.problems.append(f"SIGTERM exit code {code}")
        if (verdict := integrity(self.db)) != "ok":
            report.problems.append(f"integrity_check after step {report.steps}: {verdict}")
        got, want = change_log(self.db), change_log(self.reference.path)
        report.change_rows = sum(got.values())
        if got != want:
            extra, missing = got - want, want - got
            report.problems.append(
                f"step {report.steps}: change log differs from the clean run "
                f"({sum(extra.values())} extra or doubled, {sum(missing.values())} missing)"
            )

    def run(self, kills: int, max_seconds: float) -> Report:
        """Spread ``kills`` over every upstream step the recorded history has."""
        steps = max(len(self.api.versions(i)) for i in self.ids)
        deadline = time.monotonic() + max_seconds
        for index in range(steps):
            share = kills // steps + (index < kills % steps)
            self.step(share, deadline)
        return self.report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs in all (default 200)")
    parser.add_argument("--clones", type=int, default=30, help="copies of each recorded trial")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.03, help="seconds per list request")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=1800, help="stop killing after")
    args = parser.parse_args()
    started = time.monotonic()
    logs.configure(LoggingConfig(level="warning"))
    # Every SIGKILL resets a connection the stand-in is answering on, and socketserver prints
    # a traceback for each; the daemons' own stderr is captured separately.
    with (
        tempfile.TemporaryDirectory() as tmp,
        StandIn() as api,
        open(os.devnull, "w") as quiet,
        contextlib.redirect_stderr(quiet),
    ):
        harness = KillHarness(
            Path(tmp),
            api,
            clones=args.clones,
            batch_size=args.batch_size,
            delay=args.delay,
            seed=args.seed,
        )
        try:
            report = harness.run(args.kills, args.max_seconds)
        finally:
            harness.close()
    print(f"{len(harness.ids)} trials; {report.line()}; {time.monotonic() - started:.0f}s")
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
