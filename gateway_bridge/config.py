"""The bridge's configuration: one typed settings object, loaded at the edge (the CLI).

A TOML file (``gateway-bridge run --config bridge.toml``; see docs/bridge.md for a full
example), with any value overridable from the environment as
``POS_BRIDGE_<SECTION>__<KEY>`` (for instance ``POS_BRIDGE_BROKER__PORT=8883``).
Secrets are never in the file: it names files that hold them (mode 0600).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway_bridge.connectors.iso8583.connector import Iso8583Settings as Iso8583ConnectorSettings

_SECTION = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A configuration file that cannot be used; names the file and the fields."""


class TlsSettings(BaseModel):
    model_config = _SECTION
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


class BrokerSettings(BaseModel):
    model_config = _SECTION
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    #: "5" on Mosquitto 2 (shared subscription across bridges); "3.1.1" on the embedded
    #: demo broker (one bridge: the protocol does not need MQTT 5).
    protocol: Literal["5", "3.1.1"] = "5"
    tls: TlsSettings | None = None
    username: str | None = None
    password_file: Path | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    reconnect_min_s: Annotated[float, Field(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0)] = 30.0


class SoftwareKeyStoreSettings(BaseModel):
    model_config = _SECTION
    kind: Literal["software"] = "software"
    path: Path
    #: File holding the key-encryption key (hex). Without it the CLI reads POS_BRIDGE_KEK.
    kek_file: Path | None = None


class Pkcs11KeyStoreSettings(BaseModel):
    model_config = _SECTION
    kind: Literal["pkcs11"]
    module: Path
    token_label: str
    pin_file: Path


class SqliteJournalSettings(BaseModel):
    model_config = _SECTION
    kind: Literal["sqlite"] = "sqlite"
    path: Path


class PostgresJournalSettings(BaseModel):
    model_config = _SECTION
    kind: Literal["postgres"]
    dsn: SecretStr


class IssuerSimSettings(BaseModel):
    model_config = _SECTION
    kind: Literal["issuer_sim"] = "issuer_sim"
    #: Card profile TOML files to create accounts from (the hardware catalogue layout).
    catalogue: Path | None = None
    accounts_file: Path | None = None


class Iso8583Settings(Iso8583ConnectorSettings):
    """The ISO 8583 connector's own settings (docs/iso8583.md), selected by ``kind``."""

    kind: Literal["iso8583"]


class LimitSettings(BaseModel):
    model_config = _SECTION
    #: Requests processed at once; more wait in the broker's queue.
    max_in_flight: Annotated[int, Field(ge=1, le=10_000)] = 256
    #: How long a response envelope stays valid.
    response_ttl_ms: Annotated[int, Field(ge=1000)] = 15_000
    max_clock_skew_ms: Annotated[int, Field(ge=0)] = 300_000
    #: Pending reversals are retried this often until the connector acknowledges them.
    reversal_retry_s: Annotated[float, Field(gt=0)] = 10.0
    #: An authorisation still in flight this long after a crash is treated as unanswered.
    stale_in_flight_s: Annotated[float, Field(gt=0)] = 60.0
    #: How long a terminal's registry entry is reused before it is read again.
    registry_cache_s: Annotated[float, Field(ge=0)] = 2.0


class MetricsSettings(BaseModel):
    model_config = _SECTION
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9464


class JournalKeys(BaseModel):
    model_config = _SECTION
    #: 64 bytes hex in a 0600 file: 32 to encrypt PANs, 32 for the PAN lookup hash.
    key_file: Path


class EnrolmentSettings(BaseModel):
    """The enrolment service (``gateway-bridge enrol-server``, docs/provisioning.md)."""

    model_config = _SECTION
    host: str = "0.0.0.0"  # noqa: S104 - terminals reach it over the shop network
    port: Annotated[int, Field(ge=0, le=65535)] = 8443
    #: The terminal CA directory (``gateway-bridge ca init``); its passphrase comes from
    #: ``ca_passphrase_file`` or POS_BRIDGE_CA_PASSPHRASE.
    ca_dir: Path
    ca_passphrase_file: Path | None = None
    #: The HTTPS server certificate and key (``gateway-bridge ca issue-server``).
    tls_cert_file: Path
    tls_key_file: Path
    #: The signing certificate and key (``gateway-bridge ca issue-enrolment``).
    signer_cert_file: Path
    signer_key_file: Path
    #: The address technicians are given (``enrol-code`` prints it in the command line);
    #: by default ``https://<broker_host>:<port>``.
    public_url: str = ""
    #: What terminals are told to connect to once enrolled.
    broker_host: str
    broker_port: Annotated[int, Field(ge=1, le=65535)] = 8883
    #: Key ids of the PIN pads' key-block protection keys in the key store; a pad names
    #: its KBPK by check value and gets its PIN key under the matching one.
    pinpad_kbpk_ids: tuple[str, ...] = ()
    #: How long a code from ``terminals enrol-code`` stays usable, and how many wrong
    #: codes burn it.
    code_ttl_s: Annotated[int, Field(ge=60, le=30 * 86_400)] = 86_400
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    #: Requests per minute from one address (wrong codes included).
    rate_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 20
    #: Append-only JSON lines: who, when, terminal, key ids and KCVs; never key values.
    audit_log: Path = Path("/var/log/pos-gateway/enrolment-audit.jsonl")
    #: Where the broker reads its CRL (broker-config's ``crl.pem``), and the command that
    #: makes it re-read it, for revocations (``terminals revoke``, re-enrolment).
    crl_install_file: Path | None = None
    broker_reload_command: tuple[str, ...] = ()


def _kind(default: str) -> Callable[[Any], str]:
    """The ``kind`` of a section, which may be left out for the default implementation."""

    def kind(value: object) -> str:
        if isinstance(value, dict):
            return str(value.get("kind", default))
        return str(getattr(value, "kind", default))

    return kind


class BridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="POS_BRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    bridge_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "bridge-1"
    broker: BrokerSettings = BrokerSettings()
    keystore: Annotated[
        Annotated[SoftwareKeyStoreSettings, Tag("software")]
        | Annotated[Pkcs11KeyStoreSettings, Tag("pkcs11")],
        Discriminator(_kind("software")),
    ]
    journal: Annotated[
        Annotated[SqliteJournalSettings, Tag("sqlite")]
        | Annotated[PostgresJournalSettings, Tag("postgres")],
        Discriminator(_kind("sqlite")),
    ]
    journal_keys: JournalKeys
    connector: Annotated[
        Annotated[IssuerSimSettings, Tag("issuer_sim")]
        | Annotated[Iso8583Settings, Tag("iso8583")],
        Discriminator(_kind("issuer_sim")),
    ] = IssuerSimSettings()
    limits: LimitSettings = LimitSettings()
    metrics: MetricsSettings | None = None
    enrolment: EnrolmentSettings | None = None
    #: Where batch summaries are kept (``settle``, ``report`` and terminals' end-of-day
    #: closes); by default next to a SQLite journal (``journal.db.settlement``). Needed
    #: with a PostgreSQL journal.
    settlement_store: Path | None = None

    def settlement_store_path(self) -> Path | None:
        if self.settlement_store is not None:
            return self.settlement_store
        path = getattr(self.journal, "path", None)
        return path.with_name(path.name + ".settlement") if isinstance(path, Path) else None


def load_settings(path: Path) -> BridgeSettings:
    """Read ``path`` (TOML), apply environment overrides, validate. :class:`ConfigError` if bad."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    base = path.parent
    try:
        settings = BridgeSettings(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
    return _relative_to(settings, base)


def _relative_to(settings: BridgeSettings, base: Path) -> BridgeSettings:
    """Resolve relative file paths against the configuration file's folder."""

    def fix(model: BaseModel) -> BaseModel:
        updates: dict[str, Any] = {}
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, Path) and not value.is_absolute():
                updates[name] = base / value
            elif isinstance(value, BaseModel):
                updates[name] = fix(value)
        return model.model_copy(update=updates) if updates else model

    fixed = fix(settings)
    assert isinstance(fixed, BridgeSettings)
    return fixed
