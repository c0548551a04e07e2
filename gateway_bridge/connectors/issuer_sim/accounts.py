"""The issuer simulator's accounts: read from card profiles or from an accounts file.

Two sources, both TOML (read with :mod:`tomllib`, validated by strict pydantic models):

* **Card profiles** (``hardware/cards/catalogue/*.toml``), read as data: the bridge never
  imports ``hardware``. Of each ``[[applications]]`` entry the issuer takes only what an
  issuer has: PAN, PSN, expiry, CVN (and DKI), the issuer master key for application
  cryptograms (``[applications.keys]``; SMI and SMC are checked and not kept, the
  simulator sends no scripts) and the ``[applications.issuer]`` section: status,
  balance, currency, daily limit and the PIN verification data (``pvv`` and/or
  ``ibm3624``). Everything else in a profile (records, DOLs, the card's own counters)
  belongs to the card and is ignored. The profile's ``pin`` is the card's PIN; it is used
  only to compute a PVV or an offset that the issuer section leaves out.
* **Accounts files** in the simulator's own format (docs/issuer-simulator.md): a
  ``test_data = true`` flag and ``[[accounts]]`` tables, every key checked.

An account is :class:`Account`: immutable personalisation (the mutable balance, daily
spend and PIN tries live in the simulator's ledger). Its ``repr`` shows the id and the
masked PAN only; key material is never shown.

Errors: :class:`AccountsError` (a ``ValueError``) names the file and the field
(``applications[1].issuer.balance_minor``) and what is wrong with it, never the value.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway_bridge.connectors.issuer_sim.cryptogram import CVNS, IccKeys, derive_icc_keys
from gateway_bridge.connectors.issuer_sim.pin import (
    Ibm3624,
    PinVerification,
    VisaPvv,
    ibm3624_offset,
    visa_pvv,
)
from paycore.currency import Currency, by_alpha, by_numeric
from paycore.errors import CodecError
from paycore.pan import Pan

__all__ = [
    "Account",
    "AccountStatus",
    "AccountsError",
    "check_unique",
    "load_accounts",
    "load_accounts_file",
    "load_card_profile",
    "load_catalogue",
    "repo_catalogue_dir",
]

AccountStatus = Literal["active", "lost", "stolen", "blocked", "closed"]
DEFAULT_PIN_TRY_LIMIT = 3


class AccountsError(ValueError):
    """An account source that does not load. ``path`` and ``field`` say where."""

    def __init__(self, path: Path | str, message: str, *, field: str | None = None) -> None:
        self.path = str(path)
        self.field = field
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True, repr=False)
class Account:
    """One card account as the issuer knows it."""

    account_id: str
    pan: Pan
    psn: str
    #: YYMM, as in the request's expiry (valid through the end of that month).
    expiry: str
    cvn: int
    keys: IccKeys
    status: AccountStatus
    currency: Currency
    balance: int
    daily_limit: int
    pin_try_limit: int
    pin: PinVerification | None
    source: str

    def __repr__(self) -> str:
        return f"Account({self.account_id!r}, {self.pan.masked}, cvn={self.cvn})"


# -- the TOML shapes ------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)


class _Lenient(BaseModel):
    """A profile table of which the issuer reads some keys (the card's keys are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True, hide_input_in_errors=True)


KeyHex = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{32}$")]
PinDigits = Annotated[str, Field(pattern=r"^[0-9]{4,12}$")]


class _KeysIn(_Strict):
    ac: KeyHex
    smi: KeyHex
    smc: KeyHex


class _PvvIn(_Strict):
    pvk: KeyHex
    pvki: int = Field(ge=0, le=9)
    value: Annotated[str, Field(pattern=r"^[0-9]{4}$")] | None = None


class _Ibm3624In(_Strict):
    pvk: KeyHex
    decimalisation_table: Annotated[str, Field(pattern=r"^[0-9]{16}$")]
    offset: Annotated[str, Field(pattern=r"^[0-9]{4,12}$")] | None = None
    validation_start: int = Field(ge=0, le=18)
    validation_length: int = Field(ge=1, le=16)
    pad: Annotated[str, Field(pattern=r"^[0-9A-F]$")] = "F"


class _IssuerIn(_Strict):
    status: AccountStatus = "active"
    balance_minor: int = Field(ge=0, le=999_999_999_999)
    currency: int = Field(ge=1, le=999)
    daily_limit_minor: int = Field(ge=0, le=999_999_999_999)
    pvv: _PvvIn | None = None
    ibm3624: _Ibm3624In | None = None


class _ProfileApplication(_Lenient):
    pan: str
    psn: int = Field(default=0, ge=0, le=99)
    expiry: dt.date
    cvn: int
    pin: PinDigits | None = None
    keys: _KeysIn
    issuer: _IssuerIn


class _Profile(_Lenient):
    test_data: Literal[True]
    applications: list[_ProfileApplication] = Field(min_length=1)


class _AccountIn(_Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] | None = None
    pan: str
    psn: int = Field(default=0, ge=0, le=99)
    expiry: dt.date | Annotated[str, Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
    cvn: int
    status: AccountStatus = "active"
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | int
    balance_minor: int = Field(ge=0, le=999_999_999_999)
    daily_limit_minor: int = Field(ge=0, le=999_999_999_999)
    pin_try_limit: int = Field(default=DEFAULT_PIN_TRY_LIMIT, ge=1, le=15)
    pin_method: Literal["pvv", "ibm3624"] | None = None
    pin: PinDigits | None = None
    keys: _KeysIn
    pvv: _PvvIn | None = None
    ibm3624: _Ibm3624In | None = None


class _AccountsFile(_Strict):
    test_data: Literal[True]
    accounts: list[_AccountIn] = Field(min_length=1)


# -- loading --------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise AccountsError(path, f"cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise AccountsError(path, f"is not valid TOML ({exc})") from None


def _from_validation(path: Path, exc: ValidationError) -> AccountsError:
    first = exc.errors()[0]
    loc = ""
    for part in first["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    message = first["msg"]
    if len(exc.errors()) > 1:
        message += f" (and {len(exc.errors()) - 1} more)"
    return AccountsError(path, message, field=loc or None)


def _expiry_yymm(value: dt.date | str) -> str:
    if isinstance(value, dt.date):
        return f"{value.year % 100:02d}{value.month:02d}"
    return value[2:4] + value[5:7]


def _pin_record(
    path: Path,
    where: str,
    pan: str,
    pvv: _PvvIn | None,
    ibm: _Ibm3624In | None,
    pin: str | None,
    method: Literal["pvv", "ibm3624"] | None,
    cross_check: bool,
) -> PinVerification | None:
    """The PIN verification record, computing a missing PVV or offset from ``pin``."""
    if method is None:
        method = "pvv" if pvv is not None else ("ibm3624" if ibm is not None else None)
    if method is None:
        return None
    if method == "pvv":
        if pvv is None:
            raise AccountsError(path, "pin_method is pvv but there is no pvv table", field=where)
        pvk = bytes.fromhex(pvv.pvk)
        value = pvv.value
        computed = (
            None
            if pin is None
            else _computed(path, f"{where}.pvv", visa_pvv, pvk, pvv.pvki, pin, pan)
        )
        if value is None:
            if computed is None:
                raise AccountsError(
                    path, "pvv needs a value or a pin to derive it", field=f"{where}.pvv"
                )
            value = computed
        elif cross_check and computed is not None and computed != value:
            raise AccountsError(
                path, "pvv value does not match the pin", field=f"{where}.pvv.value"
            )
        return VisaPvv(pvk, pvv.pvki, value)
    if ibm is None:
        raise AccountsError(
            path, "pin_method is ibm3624 but there is no ibm3624 table", field=where
        )
    if ibm.validation_start + ibm.validation_length > len(pan):
        raise AccountsError(
            path, "validation data reaches past the end of the PAN", field=f"{where}.ibm3624"
        )
    pvk = bytes.fromhex(ibm.pvk)
    offset = ibm.offset
    computed = None
    if pin is not None:
        computed = _computed(
            path,
            f"{where}.ibm3624",
            ibm3624_offset,
            pvk,
            ibm.decimalisation_table,
            pin,
            pan,
            ibm.validation_start,
            ibm.validation_length,
            ibm.pad,
        )
    if offset is None:
        if computed is None:
            raise AccountsError(
                path, "ibm3624 needs an offset or a pin to derive it", field=f"{where}.ibm3624"
            )
        offset = computed
    elif cross_check and computed is not None and computed != offset:
        raise AccountsError(
            path, "ibm3624 offset does not match the pin", field=f"{where}.ibm3624.offset"
        )
    return Ibm3624(
        pvk, ibm.decimalisation_table, offset, ibm.validation_start, ibm.validation_length, ibm.pad
    )


def _computed(path: Path, field: str, function: Callable[..., str], *args: object) -> str:
    try:
        result = function(*args)
    except ValueError:
        raise AccountsError(path, "psec refused the PIN verification data", field=field) from None
    return result


def _pan(path: Path, field: str, digits: str) -> Pan:
    try:
        return Pan(digits)
    except CodecError as exc:
        raise AccountsError(path, str(exc), field=field) from None


def _keys(path: Path, field: str, cvn: int, keys: _KeysIn, pan: Pan, psn: str) -> IccKeys:
    if cvn not in CVNS:
        raise AccountsError(
            path, f"unsupported cryptogram version (one of {sorted(CVNS)})", field=f"{field}.cvn"
        )
    try:
        return derive_icc_keys(cvn, bytes.fromhex(keys.ac), pan.digits, psn)
    except ValueError:
        raise AccountsError(
            path, "the AC master key cannot be used", field=f"{field}.keys.ac"
        ) from None


def _currency(path: Path, field: str, code: str | int) -> Currency:
    try:
        return by_alpha(code) if isinstance(code, str) else by_numeric(f"{code:03d}")
    except CodecError:
        raise AccountsError(path, "unknown ISO 4217 currency", field=field) from None


def load_card_profile(path: Path) -> list[Account]:
    """The accounts of every application of one card profile (ids ``<stem>.<index>``)."""
    path = Path(path)
    try:
        profile = _Profile.model_validate(_read_toml(path))
    except ValidationError as exc:
        raise _from_validation(path, exc) from None
    accounts: list[Account] = []
    for index, app in enumerate(profile.applications):
        where = f"applications[{index}]"
        pan = _pan(path, f"{where}.pan", app.pan)
        psn = f"{app.psn:02d}"
        issuer = app.issuer
        accounts.append(
            Account(
                account_id=f"{path.stem}.{index}",
                pan=pan,
                psn=psn,
                expiry=_expiry_yymm(app.expiry),
                cvn=app.cvn,
                keys=_keys(path, where, app.cvn, app.keys, pan, psn),
                status=issuer.status,
                currency=_currency(path, f"{where}.issuer.currency", issuer.currency),
                balance=issuer.balance_minor,
                daily_limit=issuer.daily_limit_minor,
                pin_try_limit=DEFAULT_PIN_TRY_LIMIT,
                pin=_pin_record(
                    path,
                    f"{where}.issuer",
                    pan.digits,
                    issuer.pvv,
                    issuer.ibm3624,
                    app.pin,
                    None,
                    cross_check=False,
                ),
                source=str(path),
            )
        )
    return accounts


def load_accounts_file(path: Path) -> list[Account]:
    """The accounts of a file in the simulator's own format (ids default ``<stem>.<index>``)."""
    path = Path(path)
    try:
        document = _AccountsFile.model_validate(_read_toml(path))
    except ValidationError as exc:
        raise _from_validation(path, exc) from None
    accounts: list[Account] = []
    for index, entry in enumerate(document.accounts):
        where = f"accounts[{index}]"
        pan = _pan(path, f"{where}.pan", entry.pan)
        psn = f"{entry.psn:02d}"
        accounts.append(
            Account(
                account_id=entry.id or f"{path.stem}.{index}",
                pan=pan,
                psn=psn,
                expiry=_expiry_yymm(entry.expiry),
                cvn=entry.cvn,
                keys=_keys(path, where, entry.cvn, entry.keys, pan, psn),
                status=entry.status,
                currency=_currency(path, f"{where}.currency", entry.currency),
                balance=entry.balance_minor,
                daily_limit=entry.daily_limit_minor,
                pin_try_limit=entry.pin_try_limit,
                pin=_pin_record(
                    path,
                    where,
                    pan.digits,
                    entry.pvv,
                    entry.ibm3624,
                    entry.pin,
                    entry.pin_method,
                    cross_check=True,
                ),
                source=str(path),
            )
        )
    return accounts


def load_catalogue(directory: Path) -> list[Account]:
    """The accounts of every ``*.toml`` card profile in ``directory`` (sorted by name)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AccountsError(directory, "is not a directory")
    accounts: list[Account] = []
    for path in sorted(directory.glob("*.toml")):
        accounts.extend(load_card_profile(path))
    return accounts


def _load_one(path: Path) -> list[Account]:
    if path.is_dir():
        return load_catalogue(path)
    document = _read_toml(path)
    if "accounts" in document:
        return load_accounts_file(path)
    if "applications" in document:
        return load_card_profile(path)
    raise AccountsError(path, "has neither [[accounts]] nor [[applications]]")


def load_accounts(paths: Iterable[Path]) -> list[Account]:
    """Accounts from catalogue directories, card profiles and accounts files, in order.

    Raises :class:`AccountsError` when a source does not load, or when two accounts share
    a PAN or an id (the PAN is how an authorisation finds its account).
    """
    accounts: list[Account] = []
    for path in paths:
        accounts.extend(_load_one(Path(path)))
    check_unique(accounts)
    return accounts


def check_unique(accounts: Sequence[Account]) -> None:
    """Raise :class:`AccountsError` when two accounts share a PAN or an account id."""
    by_pan: dict[Pan, Account] = {}
    by_id: dict[str, Account] = {}
    for account in accounts:
        other = by_pan.get(account.pan)
        if other is not None:
            raise AccountsError(
                account.source,
                f"account {account.account_id} has the PAN of {other.account_id} ({other.source})",
                field="pan",
            )
        other = by_id.get(account.account_id)
        if other is not None:
            raise AccountsError(
                account.source, f"account id {account.account_id} is used twice", field="id"
            )
        by_pan[account.pan] = account
        by_id[account.account_id] = account


def repo_catalogue_dir() -> Path | None:
    """``hardware/cards/catalogue`` of a source checkout, when this module runs from one."""
    candidate = Path(__file__).resolve().parents[3] / "hardware" / "cards" / "catalogue"
    return candidate if candidate.is_dir() else None
