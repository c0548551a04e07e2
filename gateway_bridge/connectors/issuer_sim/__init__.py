"""The issuer simulator: the bridge's default acquirer connector (docs/issuer-simulator.md).

- :mod:`.accounts`: accounts from card profiles (``hardware/cards/catalogue/*.toml``, read
  as data) or from an accounts file; :func:`load_accounts`.
- :mod:`.cryptogram`: ARQC verification and ARPC generation per CVN (EMV Book 2, pyemv).
- :mod:`.pin`: Visa PVV and IBM 3624 offset checks (psec) for the key store's PIN verify.
- :mod:`.ledger`: the in-memory ledger of every decision.
- :mod:`.simulator`: :class:`IssuerSimulator`, the connector
  (:class:`gateway_bridge.connectors.base.Connector`).

Errors::

    AccountsError (ValueError)        an account source that does not load (file, field)
    cryptogram.IccDataError           DE55 without what the CVN needs (a paycore CodecError;
                                      inside the simulator it only ever becomes a decline)
    base.ConnectorTimeout             raised by ``authorize`` for the "lost answer" scenario
"""

from gateway_bridge.connectors.issuer_sim.accounts import (
    Account,
    AccountsError,
    AccountStatus,
    load_accounts,
    load_accounts_file,
    load_card_profile,
    load_catalogue,
    repo_catalogue_dir,
)
from gateway_bridge.connectors.issuer_sim.ledger import EntryKind, Ledger, LedgerEntry
from gateway_bridge.connectors.issuer_sim.simulator import (
    RESPONSE_CODES,
    SCENARIO_FIRST,
    SCENARIOS,
    AccountSnapshot,
    IssuerSimulator,
    ResponseCode,
)

__all__ = [
    "RESPONSE_CODES",
    "SCENARIOS",
    "SCENARIO_FIRST",
    "Account",
    "AccountSnapshot",
    "AccountStatus",
    "AccountsError",
    "EntryKind",
    "IssuerSimulator",
    "Ledger",
    "LedgerEntry",
    "ResponseCode",
    "load_accounts",
    "load_accounts_file",
    "load_card_profile",
    "load_catalogue",
    "repo_catalogue_dir",
]
