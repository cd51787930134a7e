"""config.toml: strict loading, errors that name the key and the file, documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor import config
from monitor.errors import ConfigError

ROOT = Path(__file__).parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_the_example_config_documents_exactly_the_defaults() -> None:
    loaded = config.load(ROOT / "config.toml")
    defaults = config.Config(path=loaded.path)
    assert loaded == defaults


def test_every_key_in_the_example_config_has_a_comment() -> None:
    lines = (ROOT / "config.toml").read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            assert lines[number - 1].lstrip().startswith("#"), f"undocumented: {line}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[source]\nbase_urll = 'x'\n", r"unknown key source\.base_urll"),
        ("[sorce]\n", r"unknown section \[sorce\]"),
        ("[source]\nbatch_size = 'ten'\n", r"source\.batch_size: expected a whole number"),
        ("[source]\nbatch_size = 5000\n", r"source\.batch_size = 5000 must be at most 500"),
        ("[source]\ntimeout = 'soon'\n", r"source\.timeout: 'soon' is not a duration"),
        ("[source]\nbase_url = 'ftp://x'\n", r"source\.base_url .* http:// or https://"),
        ("[schedule]\ncron = '61 * * * *'\n", r"schedule\.cron = '61 \* \* \* \*' is not a"),
        ("[smtp]\nsecurity = 'ssl'\n", r"smtp\.security = 'ssl' is not one of"),
        ("[notify]\ndigest_time = '8am'\n", r"notify\.digest_time"),
        ("[source\n", r"not valid TOML"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key_and_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        config.load(path)
    assert str(path) in str(info.value)


def test_durations_take_units() -> None:
    assert [config.parse_duration(t) for t in ("90s", "10m", "6h", "2d", 5)] == [
        90,
        600,
        21600,
        172800,
        5,
    ]


def test_the_database_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[storage]\ndatabase = 'data/monitor.db'\n")
    assert config.load(path).database_path == tmp_path / "data" / "monitor.db"


def test_the_environment_variable_names_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "[source]\nbatch_size = 7\n")
    monkeypatch.setenv(config.ENV_VAR, str(path))
    assert config.load().source.batch_size == 7


def test_a_named_config_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "absent.toml")


def test_the_smtp_password_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIAL_MONITOR_SMTP_PASSWORD", "from-env")
    assert config.SmtpConfig().password() == "from-env"
    (tmp_path / "pw").write_text("from-file\n")
    assert config.SmtpConfig(password_file="pw").password(tmp_path) == "from-file"
