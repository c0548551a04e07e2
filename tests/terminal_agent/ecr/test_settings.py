"""The [ecr] settings and the bearer token file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from terminal_agent.config import ConfigError
from terminal_agent.ecr import EcrSettings, read_token

GOOD = "0123456789abcdef0123456789abcdef"


def _write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text, encoding="ascii")
    path.chmod(mode)
    return path


def test_token_from_a_private_file(tmp_path: Path) -> None:
    token = read_token(_write(tmp_path / "ecr.token", GOOD + "\n", 0o600))
    assert token.get_secret_value() == GOOD
    assert GOOD not in repr(token)


@pytest.mark.parametrize(
    ("text", "mode", "words"),
    [
        (GOOD, 0o644, "readable by others"),
        (GOOD, 0o640, "readable by others"),
        ("short", 0o600, "at least 16"),
        ("two words here!!", 0o600, "at least 16"),
    ],
)
def test_unsafe_or_bad_token_files_are_refused(
    tmp_path: Path, text: str, mode: int, words: str
) -> None:
    path = _write(tmp_path / "ecr.token", text, mode)
    with pytest.raises(ConfigError, match=words) as caught:
        read_token(path)
    assert text not in str(caught.value)  # the file is named, its content is not


def test_missing_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(tmp_path / "absent")


def test_settings_defaults_and_limits() -> None:
    settings = EcrSettings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8780)
    with pytest.raises(ValidationError):
        EcrSettings(port=0)
    with pytest.raises(ValidationError):
        EcrSettings.model_validate({"listen": "0.0.0.0"})  # unknown keys are refused
