"""Card profiles: the personalisation of an emulated EMV card, as data.

A profile is a TOML file in ``hardware/cards/catalogue/`` (read with :mod:`tomllib`)
validated into :class:`CardProfile`, a strict frozen pydantic model. Everything in a
profile is **test data**: the PANs are published brand test numbers, the keys are test
issuer master keys, the PINs are made up. Every file must say ``test_data = true``.

What a profile holds, per application (a card may hold several, EMV 4.4 Book 1 12.2):

* the file control information and directory entry data (AID 4F/84, label 50,
  priority indicator 87, preferred name 9F12, PDOL 9F38, language 5F2D);
* the data the records carry (Book 3 Annex A): PAN 5A, PSN 5F34, expiry 5F24, effective
  date 5F25, cardholder name 5F20, track 2 equivalent 57, CVM list 8E, CDOL1 8C, CDOL2
  8D, issuer action codes 9F0D/9F0E/9F0F, usage control 9F07, issuer country 5F28,
  application currency 9F42, application version 9F08, lower consecutive offline limit
  9F14. A record lists the tags it carries (``tags``, values from the typed fields
  above) and any further literal data (``data``, tag -> hex value); the loader builds
  the record templates (70) from them;
* the AIP 82 and the AFL 94 (each AFL entry must name records that exist);
* the card's own behaviour: cryptogram version (CVN), GENERATE AC response format,
  offline PIN and PIN try limit, ATC start values, whether it may approve offline,
  whether the application is blocked;
* the test issuer master keys (AC, SMI, SMC) the ICC master keys derive from;
* the issuer-side account the issuer simulator uses (:class:`IssuerAccount`): status,
  balance and daily limit in minor units, currency, and the PIN verification data (a
  Visa PVV and/or an IBM 3624 offset with their test keys).

Errors: :class:`ProfileError` (a ``ValueError``) names the file and the field, never the
value (a profile holds PANs and keys).
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
    model_validator,
)

from paycore import dol as _dol
from paycore import tlv as _tlv
from paycore.pan import Pan

__all__ = [
    "CATALOGUE_DIR",
    "AflEntry",
    "ApplicationProfile",
    "CardProfile",
    "Ibm3624Offset",
    "IssuerAccount",
    "IssuerKeys",
    "ProfileError",
    "RecordSpec",
    "VisaPvv",
    "catalogue",
    "load_profile",
    "load_profile_file",
]

CATALOGUE_DIR = Path(__file__).parent / "catalogue"

SUPPORTED_CVNS = (10, 16, 17, 18, 20, 21)
"""Cryptogram versions the emulated cards compute (see :mod:`hardware.cards.crypto`)."""

# Terminal data every supported CVN puts into the application cryptogram, with the
# length each must have in CDOL1 and, where present, CDOL2 (EMV 4.4 Book 2 8.1.1).
AC_TERMINAL_TAGS: Mapping[int, int] = {
    0x9F02: 6,
    0x9F03: 6,
    0x9F1A: 2,
    0x95: 5,
    0x5F2A: 2,
    0x9A: 3,
    0x9C: 1,
    0x9F37: 4,
}


class ProfileError(ValueError):
    """A profile that cannot be loaded: names the file and the field, never the value."""


def _hex(value: object) -> object:
    if isinstance(value, str):
        text = value.replace(" ", "")
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise ValueError("expected a hex string") from None
    return value


def _tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


HexBytes = Annotated[bytes, BeforeValidator(_hex)]
SecretHex = Annotated[SecretBytes, BeforeValidator(_hex)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)


class IssuerKeys(_Model):
    """Test issuer master keys (double-length TDES) the ICC master keys derive from."""

    ac: SecretHex
    smi: SecretHex
    smc: SecretHex

    @model_validator(mode="after")
    def _lengths(self) -> IssuerKeys:
        for name in ("ac", "smi", "smc"):
            if len(getattr(self, name).get_secret_value()) != 16:
                raise ValueError(f"issuer master key {name} must be 16 bytes")
        return self


class AflEntry(_Model):
    """One AFL entry (Book 3 10.2): SFI, first and last record, records for offline auth."""

    sfi: int = Field(ge=1, le=30)
    first: int = Field(ge=1, le=254)
    last: int = Field(ge=1, le=254)
    oda: int = Field(default=0, ge=0, le=254)

    @model_validator(mode="after")
    def _order(self) -> AflEntry:
        if self.last < self.first:
            raise ValueError("last record before first")
        if self.oda > self.last - self.first + 1:
            raise ValueError("more offline-authentication records than records")
        return self

    def encode(self) -> bytes:
        """The four AFL bytes (SFI in b8-b4 of the first)."""
        return bytes((self.sfi << 3, self.first, self.last, self.oda))


class RecordSpec(_Model):
    """One record of an application elementary file."""

    sfi: int = Field(ge=1, le=30)
    number: int = Field(ge=1, le=254)
    tags: Annotated[tuple[str, ...], BeforeValidator(_tuple)] = ()
    data: dict[str, HexBytes] = Field(default_factory=dict)


class VisaPvv(_Model):
    """Visa PIN verification value with its test PIN verification key (TEST DATA)."""

    pvk: SecretHex
    pvki: int = Field(ge=0, le=9)
    value: str = Field(pattern=r"^[0-9]{4}$", repr=False)


class Ibm3624Offset(_Model):
    """IBM 3624 PIN offset with its test key and decimalisation table (TEST DATA)."""

    pvk: SecretHex
    decimalisation_table: str = Field(pattern=r"^[0-9]{16}$")
    offset: str = Field(pattern=r"^[0-9]{4,12}$", repr=False)
    validation_start: int = Field(ge=0)
    validation_length: int = Field(ge=1, le=16)
    pad: str = Field(default="F", pattern=r"^[0-9A-F]$")


class IssuerAccount(_Model):
    """The issuer's side of the account, for the issuer simulator (TEST DATA)."""

    status: Literal["active", "blocked", "lost", "stolen", "closed"] = "active"
    balance_minor: int
    currency: int = Field(ge=1, le=999)
    daily_limit_minor: int = Field(ge=0)
    pvv: VisaPvv | None = None
    ibm3624: Ibm3624Offset | None = None


class ApplicationProfile(_Model):
    """One payment application on the card (an ADF) with its personalisation."""

    aid: HexBytes = Field(min_length=5, max_length=16)
    label: str = Field(min_length=1, max_length=16, pattern=r"^[\x20-\x7E]+$")
    preferred_name: str | None = Field(default=None, max_length=16)
    priority: int | None = Field(default=None, ge=0, le=255)
    partial_selection: bool = True
    language: str = Field(default="en", pattern=r"^([a-z]{2})+$")

    pan: Pan = Field(repr=False)
    psn: int = Field(default=0, ge=0, le=99)
    expiry: dt.date
    effective: dt.date
    cardholder_name: str = Field(min_length=2, max_length=26, repr=False)
    service_code: str = Field(default="201", pattern=r"^[0-9]{3}$")
    issuer_country: int = Field(ge=1, le=999)
    currency: int = Field(ge=1, le=999)
    application_version: HexBytes = Field(min_length=2, max_length=2)
    auc: HexBytes = Field(min_length=2, max_length=2)

    aip: HexBytes = Field(min_length=2, max_length=2)
    afl: Annotated[tuple[AflEntry, ...], BeforeValidator(_tuple)] = Field(min_length=1)
    records: Annotated[tuple[RecordSpec, ...], BeforeValidator(_tuple)] = Field(min_length=1)
    cvm_list: HexBytes = Field(min_length=10)
    iac_default: HexBytes = Field(min_length=5, max_length=5)
    iac_denial: HexBytes = Field(min_length=5, max_length=5)
    iac_online: HexBytes = Field(min_length=5, max_length=5)
    pdol: HexBytes | None = None
    cdol1: HexBytes
    cdol2: HexBytes
    log_format: HexBytes | None = None

    cvn: int
    dki: int = Field(default=1, ge=0, le=255)
    response_format: Literal[1, 2] = 1
    keys: IssuerKeys = Field(repr=False)

    pin: SecretStr = Field(repr=False)
    offline_pin: bool = False
    pin_try_limit: int = Field(default=3, ge=1, le=15)
    atc: int = Field(default=0, ge=0, le=0xFFFE)
    last_online_atc: int = Field(default=0, ge=0, le=0xFFFF)
    offline_capable: bool = True
    lower_consecutive_offline_limit: int = Field(default=3, ge=0, le=255)
    blocked: bool = False

    issuer: IssuerAccount

    @model_validator(mode="after")
    def _consistent(self) -> ApplicationProfile:
        if self.cvn not in SUPPORTED_CVNS:
            raise ValueError(f"cvn must be one of {SUPPORTED_CVNS}")
        pin = self.pin.get_secret_value()
        if not (pin.isdigit() and pin.isascii() and 4 <= len(pin) <= 12):
            raise ValueError("pin must be 4 to 12 digits")
        if len(self.cvm_list) % 2:
            raise ValueError("cvm_list: 8 bytes of amounts, then 2-byte rules")
        for name in ("pdol", "cdol1", "cdol2", "log_format"):
            raw = getattr(self, name)
            if raw is not None:
                try:
                    _dol.parse(raw)
                except _dol.DolError as exc:
                    raise ValueError(f"{name} does not parse: {exc}") from None
        for name in ("cdol1", "cdol2"):
            entries = {e.tag: e.length for e in _dol.parse(getattr(self, name))}
            for tag, length in AC_TERMINAL_TAGS.items():
                if name == "cdol1" and tag not in entries:
                    raise ValueError(f"cdol1 must request tag {tag:X}")
                if tag in entries and entries[tag] != length:
                    raise ValueError(f"{name}: tag {tag:X} must have length {length}")
        records = {(r.sfi, r.number) for r in self.records}
        if len(records) != len(self.records):
            raise ValueError("two records with the same SFI and number")
        for entry in self.afl:
            for number in range(entry.first, entry.last + 1):
                if (entry.sfi, number) not in records:
                    raise ValueError(f"afl names SFI {entry.sfi} record {number}, not in records")
        known = profile_tags(self)
        carried: set[int] = set()
        for record in self.records:
            for name in record.tags:
                tag = _tag_of(name)
                if tag not in known:
                    raise ValueError(f"record tag {name} is not a profile field")
                carried.add(tag)
            for name in record.data:
                carried.add(_tag_of(name))
        for tag in (0x5A, 0x5F24, 0x8C, 0x8D):  # Book 3 7.2: mandatory data objects
            if tag not in carried:
                raise ValueError(f"the records must carry tag {tag:X}")
        return self


class CardProfile(_Model):
    """A whole card: its directory files and its applications."""

    name: str
    test_data: Literal[True]
    description: str
    atr: HexBytes = bytes.fromhex("3B600000")  # EMV basic ATR, T=0 (Book 1 8.3)
    pse: bool = True
    ppse: bool = True
    directory_sfi: int = Field(default=1, ge=1, le=10)
    applications: Annotated[tuple[ApplicationProfile, ...], BeforeValidator(_tuple)] = Field(
        min_length=1
    )

    @model_validator(mode="after")
    def _unique(self) -> CardProfile:
        aids = [app.aid for app in self.applications]
        if len(set(aids)) != len(aids):
            raise ValueError("two applications with the same AID")
        return self


def _tag_of(name: str) -> int:
    try:
        raw = bytes.fromhex(name)
        _tlv.Tlv(int.from_bytes(raw, "big"), b"")
    except ValueError:
        raise ValueError("a record tag must be a primitive tag in hex") from None
    return int.from_bytes(raw, "big")


def _bcd(digits: str) -> bytes:
    return bytes.fromhex(digits)


def _n(value: int, length: int) -> bytes:
    """Numeric (format n) value of ``length`` bytes: BCD, right-justified."""
    return bytes.fromhex(f"{value:0{2 * length}d}")


def _yymmdd(date: dt.date) -> bytes:
    return bytes.fromhex(date.strftime("%y%m%d"))


def track2_equivalent(app: ApplicationProfile) -> bytes:
    """Track 2 equivalent data (tag 57): PAN, D, YYMM, service code, F padding."""
    digits = f"{app.pan.digits}D{app.expiry.strftime('%y%m')}{app.service_code}0000000"
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex(digits)


def profile_tags(app: ApplicationProfile) -> dict[int, bytes]:
    """The values of the data objects the typed profile fields define, by tag."""
    pan = app.pan.digits + ("F" if len(app.pan.digits) % 2 else "")
    return {
        0x57: track2_equivalent(app),
        0x5A: _bcd(pan),
        0x5F20: app.cardholder_name.encode("ascii"),
        0x5F24: _yymmdd(app.expiry),
        0x5F25: _yymmdd(app.effective),
        0x5F28: _n(app.issuer_country, 2),
        0x5F30: _bcd("0" + app.service_code),
        0x5F34: _n(app.psn, 1),
        0x8C: app.cdol1,
        0x8D: app.cdol2,
        0x8E: app.cvm_list,
        0x9F07: app.auc,
        0x9F08: app.application_version,
        0x9F0D: app.iac_default,
        0x9F0E: app.iac_denial,
        0x9F0F: app.iac_online,
        0x9F14: bytes((app.lower_consecutive_offline_limit,)),
        0x9F42: _n(app.currency, 2),
    }


def build_records(app: ApplicationProfile) -> dict[tuple[int, int], bytes]:
    """Every record of ``app`` as its READ RECORD answer: a 70 template, by (SFI, number)."""
    values = profile_tags(app)
    out: dict[tuple[int, int], bytes] = {}
    for record in app.records:
        items = [_tlv.Tlv(_tag_of(name), values[_tag_of(name)]) for name in record.tags]
        items += [_tlv.Tlv(_tag_of(name), value) for name, value in record.data.items()]
        out[(record.sfi, record.number)] = _tlv.encode([_tlv.Tlv(0x70, tuple(items))])
    return out


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(file)"


def load_profile_file(path: Path) -> CardProfile:
    """Load and validate the profile at ``path``; its stem is the profile's name."""
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"{path.name}: no such profile file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path.name}: not valid TOML ({exc})") from None
    raw.setdefault("name", path.stem)
    try:
        return CardProfile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ProfileError(f"{path.name}: {problems}") from None


@cache
def _load_cached(name: str) -> CardProfile:
    return load_profile_file(CATALOGUE_DIR / f"{name}.toml")


def load_profile(name: str) -> CardProfile:
    """The catalogue profile ``name`` (a file stem in ``hardware/cards/catalogue``)."""
    if name not in catalogue():
        raise ProfileError(f"{name}: not in the card catalogue")
    return _load_cached(name)


def catalogue() -> list[str]:
    """The names of the catalogue's profiles, sorted."""
    return sorted(path.stem for path in CATALOGUE_DIR.glob("*.toml"))
