"""The ``trial-monitor`` command line: a thin layer over the library.

Each module registers the commands of one area on the shared group in ``base``.
"""

from monitor.cli import alerts, core, service
from monitor.cli.base import cli

__all__ = ["alerts", "cli", "core", "main", "service"]


def main() -> None:
    cli(prog_name="trial-monitor")
