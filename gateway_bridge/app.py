"""Assembling a bridge from its settings: key store, journal, connector, metrics.

The only place that turns configuration into objects; the CLI and the tests both go
through :func:`open_bridge`. Secrets (the key store's KEK or token PIN, the journal keys)
are read from the files the settings name; the KEK may instead come from the
environment, which only the CLI reads and passes in.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from gateway_bridge.config import (
    BridgeSettings,
    ConfigError,
    IssuerSimSettings,
    Pkcs11KeyStoreSettings,
    PostgresJournalSettings,
    SoftwareKeyStoreSettings,
)
from gateway_bridge.connectors.base import Connector
from gateway_bridge.journal import Journal, JournalKeys, SqliteJournal
from gateway_bridge.keystore import KeyStore, SoftwareKeyStore, read_kek_file
from gateway_bridge.keystore.cli import KEK_ENV
from gateway_bridge.keystore.software import check_private_file, read_secret_text
from gateway_bridge.metrics import BridgeMetrics
from gateway_bridge.service import Bridge


def read_journal_keys(path: Path) -> JournalKeys:
    """The journal's PAN keys: 64 bytes as hex in a 0600 file (32 encrypt, 32 hash)."""
    check_private_file(path)
    try:
        raw = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        raise ConfigError(f"{path}: expected 128 hex digits (the journal keys)") from None
    if len(raw) != 64:
        raise ConfigError(f"{path}: expected 128 hex digits (the journal keys)")
    return JournalKeys(pan_key=raw[:32], pan_hash_key=raw[32:])


def open_keystore(
    settings: SoftwareKeyStoreSettings | Pkcs11KeyStoreSettings, environ: Mapping[str, str]
) -> KeyStore:
    if isinstance(settings, SoftwareKeyStoreSettings):
        if settings.kek_file is not None:
            kek = read_kek_file(settings.kek_file)
        elif KEK_ENV in environ:
            try:
                kek = bytes.fromhex(environ[KEK_ENV])
            except ValueError:
                raise ConfigError(f"{KEK_ENV} must be hex") from None
        else:
            raise ConfigError(f"the software key store needs keystore.kek_file or {KEK_ENV}")
        return SoftwareKeyStore(settings.path, kek)
    from gateway_bridge.keystore.pkcs11 import Pkcs11KeyStore

    return Pkcs11KeyStore(
        settings.module, settings.token_label, read_secret_text(settings.pin_file)
    )


async def open_journal(settings: BridgeSettings) -> Journal:
    keys = read_journal_keys(settings.journal_keys.key_file)
    if isinstance(settings.journal, PostgresJournalSettings):
        from gateway_bridge.journal.postgres import PostgresJournal

        return await PostgresJournal.open(settings.journal.dsn.get_secret_value(), keys)
    return await SqliteJournal.open(settings.journal.path, keys)


def build_connector(settings: BridgeSettings) -> Connector:
    connector = settings.connector
    if isinstance(connector, IssuerSimSettings):
        from gateway_bridge.connectors.issuer_sim import IssuerSimulator
        from gateway_bridge.connectors.issuer_sim.accounts import repo_catalogue_dir

        paths = [p for p in (connector.catalogue, connector.accounts_file) if p is not None]
        if not paths:
            default = repo_catalogue_dir()
            if default is None:
                raise ConfigError("connector.catalogue or connector.accounts_file is needed")
            paths = [default]
        return IssuerSimulator.from_paths(paths)
    from gateway_bridge.connectors.iso8583.connector import Iso8583Connector

    return Iso8583Connector(connector)


@contextlib.asynccontextmanager
async def open_bridge(
    settings: BridgeSettings,
    *,
    environ: Mapping[str, str],
    connector: Connector | None = None,
    metrics: BridgeMetrics | None = None,
) -> AsyncIterator[Bridge]:
    """A bridge with its collaborators open; all closed on exit."""
    keystore = open_keystore(settings.keystore, environ)
    try:
        journal = await open_journal(settings)
        try:
            yield Bridge(
                settings=settings,
                keystore=keystore,
                journal=journal,
                connector=connector if connector is not None else build_connector(settings),
                metrics=metrics,
            )
        finally:
            await journal.close()
    finally:
        close = getattr(keystore, "close", None)
        if close is not None:
            close()
