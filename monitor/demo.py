"""The offline demo: real recorded versions played through the real pipeline.

A local stand-in of the API serves the first recorded version of each trial in
``demo_data/history``; each later cycle switches every trial to its next recorded version, so
the changes printed are the ones the registry really made.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from monitor import app, render
from monitor.config import Config, SourceConfig, StorageConfig
from monitor.cycle import run_cycle
from monitor.standin import StandIn
from monitor.storage import utcnow
from monitor.subscriptions import context_of

HISTORY = Path(__file__).parent / "demo_data" / "history"
#: The trial whose page is printed: it was terminated between two recorded versions.
FEATURED = "NCT05935098"


def run_demo(echo: Callable[[str], None], workdir: Path | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp, StandIn() as api:
        folder = Path(workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        db = folder / "demo.db"
        db.unlink(missing_ok=True)
        cfg = Config(
            source=SourceConfig(base_url=api.base_url, pace=0.0),
            storage=StorageConfig(database=str(db)),
        )
        ids = api.load_history(HISTORY)
        echo(f"Stand-in API at {api.base_url} serving {len(ids)} real trials (offline).")
        with app.open_store(cfg) as store, app.make_fetcher(cfg) as fetcher:
            store.add_trials(ids, utcnow())
            cycle = 1
            echo(
                f"Cycle {cycle} (first sight, recorded as the baseline): "
                + run_cycle(store, fetcher).line()
            )
            while api.advance_all():
                cycle += 1
                echo(f"Cycle {cycle} (next recorded versions): {run_cycle(store, fetcher).line()}")
            found = [c for c in store.changes() if not c.baseline]
            echo(f"\nChanges found after the baseline ({len(found)}):\n")
            titles = {t.nct_id: t.title for t in store.trials()}
            echo(render.changes_md(found, titles, partial(context_of, store)))
            trial = store.trial(FEATURED)
            if trial is not None and trial.version_id is not None:
                echo("\n" + "=" * 72 + "\n")
                echo(
                    render.trial_page(
                        trial,
                        store.version_study(trial.version_id),
                        store.changes([FEATURED]),
                        utcnow(),
                    )
                )
        if workdir:
            (folder / "config.toml").write_text('[storage]\ndatabase = "demo.db"\n')
            echo(f"\nKept {db}. Explore it: trial-monitor changes --config {folder}/config.toml")
