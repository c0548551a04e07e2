"""The ``[ecr]`` section of the agent's configuration and its bearer token (DESIGN 9).

The token is never in the configuration file: the section names a 0600 file holding it,
read once at start-up by :func:`read_token`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from terminal_agent.config import ConfigError, EcrSettings

__all__ = ["MIN_TOKEN_LENGTH", "EcrSettings", "read_token"]

#: Shortest token accepted: 128 bits as hex or base64 is well above it.
MIN_TOKEN_LENGTH = 16


def read_token(path: Path) -> SecretStr:
    """The bearer token from a 0600 file; :class:`ConfigError` naming the file otherwise."""
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the token must be ASCII") from None
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others: chmod 600 {path}")
    if len(text) < MIN_TOKEN_LENGTH or not text.isprintable() or " " in text:
        raise ConfigError(
            f"{path}: expected one token of at least {MIN_TOKEN_LENGTH} printable characters"
        )
    return SecretStr(text)
