"""Every failure the monitor reports on purpose.

The CLI turns any of these into one clean message (no traceback); anything else is a bug.

    MonitorError
    ├── ConfigError        config.toml or a command-line value is wrong
    │   └── UsageError     a bad argument the user typed (exit code 2)
    ├── FetchError         the registry could not give us a usable record
    │   ├── NotFound       the registry says the trial does not exist (404)
    │   └── BadRequest     the registry rejected the request (400)
    ├── StorageError       the database cannot be opened, migrated or written
    │   └── LockedError    another daemon already owns this database
    └── NotifyError        an alert could not be built or sent
"""

from __future__ import annotations


class MonitorError(Exception):
    """Base of every error the monitor raises on purpose."""

    exit_code = 1


class ConfigError(MonitorError):
    """The configuration is unusable; the message names the key and the file."""


class UsageError(ConfigError):
    """A command-line value is wrong; nothing was changed."""

    exit_code = 2


class FetchError(MonitorError):
    """A request failed after retries, or its body was not a usable record."""


class NotFound(FetchError):
    """The registry answered 404 for a trial."""


class BadRequest(FetchError):
    """The registry answered 400: one of the ids in the request is malformed."""


class StorageError(MonitorError):
    """The database could not be opened, migrated or written."""


class LockedError(StorageError):
    """Another daemon holds this database."""


class NotifyError(MonitorError):
    """An alert could not be built or delivered."""
