"""Load and check ``config.toml``.

Every section is a frozen dataclass whose field defaults are the documented defaults. Loading is
strict: an unknown section or key, or a value of the wrong type or range, raises ConfigError
naming the key and the file, because a typo silently ignored in an unattended service is a bug
that surfaces months later.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError

ENV_VAR = "TRIAL_MONITOR_CONFIG"
DEFAULT_PATH = Path("config.toml")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``90s``, ``10m``, ``6h``, ``2d`` (a bare number is seconds)."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 90s, 10m or 6h")
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90s, 10m or 6h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True)
class SourceConfig:
    base_url: str = field(default="https://clinicaltrials.gov/api/v2", metadata={"url": True})
    batch_size: int = field(default=100, metadata={"min": 1, "max": 500})
    timeout: float = field(default=30, metadata={"duration": True, "min": 0.1})
    pace: float = field(default=1.0, metadata={"duration": True, "min": 0})
    max_attempts: int = field(default=5, metadata={"min": 1, "max": 20})
    backoff_initial: float = field(default=2.0, metadata={"duration": True, "min": 0})
    backoff_max: float = field(default=120.0, metadata={"duration": True, "min": 0})
    user_agent: str = ""


@dataclass(frozen=True)
class StorageConfig:
    database: str = "trial-monitor.db"
    busy_timeout: float = field(default=30, metadata={"duration": True, "min": 0})


@dataclass(frozen=True)
class LoggingConfig:
    format: str = field(default="auto", metadata={"choices": ("auto", "console", "json")})
    level: str = field(default="info", metadata={"choices": ("debug", "info", "warning", "error")})


@dataclass(frozen=True)
class ScheduleConfig:
    every: float = field(default=21600.0, metadata={"duration": True, "min": 10})
    cron: str = field(default="", metadata={"check": "cron"})
    jitter: float = field(default=120.0, metadata={"duration": True, "min": 0})
    full_sweep: float = field(default=86400.0, metadata={"duration": True, "min": 60})
    stale_after: float = field(default=259200.0, metadata={"duration": True, "min": 60})
    stale_failures: int = field(default=5, metadata={"min": 1})


@dataclass(frozen=True)
class NotifyConfig:
    allow_private_targets: bool = False
    deliver_every: float = field(default=60.0, metadata={"duration": True, "min": 1})
    retry_for: float = field(default=86400.0, metadata={"duration": True, "min": 0})
    digest_time: str = field(default="08:00", metadata={"pattern": r"^([01]\d|2[0-3]):[0-5]\d$"})
    digest_weekday: str = field(
        default="mon", metadata={"choices": ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    )
    timeout: float = field(default=15.0, metadata={"duration": True, "min": 0.1})


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "localhost"
    port: int = field(default=587, metadata={"min": 1, "max": 65535})
    security: str = field(default="starttls", metadata={"choices": ("starttls", "tls", "none")})
    username: str = ""
    sender: str = field(default="trial-monitor@localhost", metadata={"key": "from"})
    password_env: str = "TRIAL_MONITOR_SMTP_PASSWORD"
    password_file: str = ""
    timeout: float = field(default=30.0, metadata={"duration": True, "min": 0.1})

    def password(self, base: Path | None = None) -> str | None:
        """The SMTP password, from a file or the environment: never from config text."""
        if self.password_file:
            path = Path(self.password_file).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
            try:
                return path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"smtp.password_file: cannot read {path}: {exc.strerror}"
                ) from None
        return os.environ.get(self.password_env) or None


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``path`` is the file it came from (None for defaults)."""

    source: SourceConfig = field(default_factory=SourceConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    path: Path | None = None

    @property
    def database_path(self) -> Path:
        """The database path, relative to the config file's folder."""
        db = Path(self.storage.database).expanduser()
        if db.is_absolute() or self.path is None:
            return db
        return self.path.parent / db


SECTIONS: dict[str, type[Any]] = {
    name: kind for name, kind in typing.get_type_hints(Config).items() if name != "path"
}


def resolve_path(explicit: str | os.PathLike[str] | None) -> Path:
    """The config path from the option, else the environment variable, else ./config.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


def load(path: str | os.PathLike[str] | None = None, *, required: bool = False) -> Config:
    """Read and check a config file. A missing default file means "all defaults"."""
    config_path = resolve_path(path)
    if not config_path.exists():
        if required or path is not None or os.environ.get(ENV_VAR):
            raise ConfigError(
                f"{config_path}: config file not found. Create it (see config.toml in the "
                "project for every key) or pass --config PATH."
            )
        return Config(path=config_path.absolute())
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read: {exc.strerror}") from None
    return from_dict(data, config_path.absolute())


def from_dict(data: dict[str, Any], path: Path | None = None) -> Config:
    """Build a Config from parsed TOML, checking every section and key."""
    where = str(path) if path else "config"
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            raise ConfigError(f"{where}: unknown section [{name}]; known sections: {known}")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{name}] must be a table of keys")
        sections[name] = _section(SECTIONS[name], name, value, where)
    return Config(**sections, path=path)


def _section(cls: type[Any], name: str, values: dict[str, Any], where: str) -> Any:
    fields = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{where}: unknown key {name}.{key}; known keys: {known}")
        f = fields[key]
        kwargs[f.name] = _value(f, hints[f.name], f"{name}.{key}", raw, where)
    return cls(**kwargs)


def _value(f: dataclasses.Field[Any], kind: Any, key: str, raw: Any, where: str) -> Any:
    meta = f.metadata
    try:
        value = parse_duration(raw) if meta.get("duration") else _coerce(kind, raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None
    if "choices" in meta and value not in meta["choices"]:
        options = " | ".join(meta["choices"])
        raise ConfigError(f"{where}: {key} = {raw!r} is not one of {options}")
    if meta.get("url") and not re.match(r"^https?://[^/\s]+", str(value)):
        raise ConfigError(f"{where}: {key} = {raw!r} must be an http:// or https:// URL")
    if meta.get("check") == "cron" and value:
        _check_cron(key, str(value), where)
    if "pattern" in meta and not re.match(meta["pattern"], str(value)):
        raise ConfigError(f"{where}: {key} = {raw!r} has the wrong form (expected e.g. 08:00)")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{where}: {key} = {raw!r} must be at least {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{where}: {key} = {raw!r} must be at most {meta['max']}")
    return value


def _coerce(kind: Any, raw: Any) -> Any:
    if kind is bool:
        if not isinstance(raw, bool):
            raise ValueError(f"expected true or false, got {raw!r}")
        return raw
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"expected a whole number, got {raw!r}")
        return raw
    if kind is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"expected a number, got {raw!r}")
        return float(raw)
    if kind is str:
        if not isinstance(raw, str):
            raise ValueError(f"expected a string, got {raw!r}")
        return raw
    raise ValueError(f"unsupported setting type {kind!r}")


def _check_cron(key: str, value: str, where: str) -> None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as exc:
        raise ConfigError(
            f"{where}: {key} = {value!r} is not a crontab line such as '30 10 * * *' ({exc})"
        ) from None
