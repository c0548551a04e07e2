"""The agent's configuration: one typed settings object, loaded at the edge (the CLI).

A TOML file (``terminal-agent run --config agent.toml``; docs/terminal-agent.md shows a
full one); values may be overridden as ``POS_AGENT_<SECTION>__<KEY>``. Secrets are never
in the file: it names 0600 files (the key-block protection key, the journal key).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from paycore import tr31
from paycore.wire.topics import TERMINAL_ID_PATTERN
from terminal_agent.kernel import TerminalConfig
from terminal_agent.link import LinkSettings, TlsFiles
from terminal_agent.pinpad import PinpadSettings
from terminal_agent.reader import ReaderSettings
from terminal_agent.receipts.model import MerchantSettings
from terminal_agent.receipts.printer import PrinterSettings

_SECTION = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A configuration that cannot be used; names the file and the fields."""


class BrokerSection(BaseModel):
    model_config = _SECTION
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 8883
    protocol: str = "5"
    tls: TlsFiles | None = None


class KeysSection(BaseModel):
    model_config = _SECTION
    #: The terminal's AES DUKPT initial key as a TR-31 block (version D, usage B1, with
    #: the IK optional block naming its Initial Key ID), as provisioning delivered it.
    data_key_block_file: Path
    #: The key-block protection key that block is wrapped under (hex, mode 0600).
    kbpk_file: Path


class JournalSection(BaseModel):
    model_config = _SECTION
    path: Path = Path("/var/lib/pos-agent/journal.db")
    #: 32 bytes as hex in a 0600 file: encrypts request bodies until the host answers.
    key_file: Path = Path("/etc/pos-agent/journal.key")


class TimeoutSection(BaseModel):
    model_config = _SECTION
    card_s: Annotated[float, Field(gt=0)] = 60.0
    pin_s: Annotated[float, Field(gt=0)] = 30.0
    host_s: Annotated[float, Field(gt=0)] = 15.0
    reversal_retry_s: Annotated[float, Field(gt=0)] = 30.0
    #: How often ``run`` refreshes the self-test results on the status topic.
    health_s: Annotated[float, Field(ge=5)] = 900.0


class EcrSettings(BaseModel):
    """Where the ECR API listens and which file holds its bearer token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8780
    #: The bearer token the register sends, alone in a 0600 file.
    token_file: Path = Path("/etc/pos-agent/ecr.token")
    #: How many journal rows ``GET /v1/payments?reference=`` and ``GET /v1/totals`` scan.
    scan_limit: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    #: How long a create waits for the payment to be journaled before answering.
    start_timeout_s: Annotated[float, Field(gt=0)] = 5.0


def _agent_emv_defaults() -> TerminalConfig:
    # 9F33 byte 2 without "plaintext PIN for ICC verification": with a PIN pad separate
    # from the reader, the clear PIN would have to cross this computer (cardholder.py).
    return TerminalConfig(terminal_capabilities=bytes.fromhex("E06800"))


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="POS_AGENT_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    terminal_id: Annotated[str, Field(pattern=TERMINAL_ID_PATTERN)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "GBP"
    broker: BrokerSection = BrokerSection()
    keys: KeysSection
    reader: ReaderSettings = ReaderSettings()
    pinpad: PinpadSettings = PinpadSettings()
    pin_key_slot: Annotated[int, Field(ge=0, le=255)] = 1
    journal: JournalSection = JournalSection()
    timeouts: TimeoutSection = TimeoutSection()
    emv: TerminalConfig = Field(default_factory=_agent_emv_defaults)
    #: The ECR API for cash registers (docs/ecr-api.md); off when absent.
    ecr: EcrSettings | None = None
    #: The merchant block of receipts, and where they are printed (docs/receipts.md);
    #: no receipts are printed without a printer.
    receipts: MerchantSettings | None = None
    printer: PrinterSettings | None = None

    def link_settings(self) -> LinkSettings:
        return LinkSettings(
            terminal_id=self.terminal_id,
            host=self.broker.host,
            port=self.broker.port,
            protocol="3.1.1" if self.broker.protocol == "3.1.1" else "5",
            tls=self.broker.tls,
            request_timeout_s=self.timeouts.host_s,
        )


def load_settings(path: Path) -> AgentSettings:
    """Read ``path`` (TOML), apply environment overrides, validate; :class:`ConfigError`."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    _resolve_paths(data, path.parent)
    try:
        return AgentSettings(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """File settings relative to the configuration file's folder."""
    for *sections, key in (
        ("keys", "data_key_block_file"),
        ("keys", "kbpk_file"),
        ("journal", "path"),
        ("journal", "key_file"),
        ("ecr", "token_file"),
        ("printer", "path"),
        ("broker", "tls", "ca_file"),
        ("broker", "tls", "cert_file"),
        ("broker", "tls", "key_file"),
    ):
        part: object = data
        for section in sections:
            part = part.get(section) if isinstance(part, dict) else None
        value = part.get(key) if isinstance(part, dict) else None
        if isinstance(part, dict) and isinstance(value, str) and not Path(value).is_absolute():
            part[key] = str(base / value)


def read_secret_hex(path: Path, size: int | None = None) -> bytes:
    """A key from a 0600 file of hex digits; ConfigError naming the file otherwise."""
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others: chmod 600 {path}")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{path}: expected hex digits") from None
    if size is not None and len(key) != size:
        raise ConfigError(f"{path}: expected {size} bytes")
    return key


def data_initial_key(keys: KeysSection) -> tuple[bytes, bytes]:
    """(initial key, Initial Key ID) from the provisioned TR-31 block."""
    kbpk = read_secret_hex(keys.kbpk_file)
    try:
        block = keys.data_key_block_file.read_text(encoding="ascii").strip()
        header, key = tr31.unwrap(kbpk, block)
    except OSError as exc:
        raise ConfigError(f"{keys.data_key_block_file}: cannot read ({exc.strerror})") from None
    except tr31.KeyBlockError as exc:
        raise ConfigError(f"{keys.data_key_block_file}: key block refused ({exc})") from None
    if header.key_usage != "B1":
        raise ConfigError(f"{keys.data_key_block_file}: not an initial DUKPT key (usage B1)")
    ikid = dict(header.optional_blocks).get("IK")
    if ikid is None or len(ikid) != 16:
        raise ConfigError(f"{keys.data_key_block_file}: no IK block with the Initial Key ID")
    return key, bytes.fromhex(ikid)
