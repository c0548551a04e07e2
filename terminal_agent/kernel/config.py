"""The terminal configuration the EMV kernel runs with (EMV 4.4 Book 4 section 6, Book 3 10).

One strict, frozen pydantic model (house style 8 and 9): loaded at the edge (CLI, the
retained config topic), passed into :class:`~terminal_agent.kernel.EmvKernel`. Binary
fields are written as hex strings ("E0E808"). The defaults describe an attended,
merchant-operated terminal that is offline-capable with online capability (9F35 ``22``),
in the United Kingdom, taking GBP, with a PIN pad; docs/emv-kernel.md lists every field.

The default action codes (TACs) are illustrative values, not a scheme's: an acquirer
sets its own per AID.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from paycore import tags as _tags

__all__ = [
    "DEFAULT_DE55_TAGS",
    "AidConfig",
    "RandomSelection",
    "TerminalConfig",
    "default_aids",
]


def _hex(value: object) -> object:
    if isinstance(value, str):
        try:
            return bytes.fromhex(value.replace(" ", ""))
        except ValueError:
            raise ValueError("expected a hex string") from None
    return value


def _tag(value: object) -> object:
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            raise ValueError("expected a tag in hex") from None
    return value


def _tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


HexBytes = Annotated[bytes, BeforeValidator(_hex)]
Tag = Annotated[int, BeforeValidator(_tag)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)


DEFAULT_DE55_TAGS: tuple[int, ...] = (
    0x9F26,  # application cryptogram
    0x9F27,  # cryptogram information data
    0x9F10,  # issuer application data
    0x9F37,  # unpredictable number
    0x9F36,  # ATC
    0x95,  # TVR
    0x9A,  # transaction date
    0x9C,  # transaction type
    0x9F02,  # amount, authorised
    0x5F2A,  # transaction currency
    0x82,  # AIP
    0x9F1A,  # terminal country
    0x9F03,  # amount, other
    0x9F33,  # terminal capabilities
    0x9F34,  # CVM results
    0x9F35,  # terminal type
    0x9F1E,  # IFD serial number
    0x84,  # DF name
    0x9F09,  # terminal application version
    0x9F41,  # transaction sequence counter
    0x9B,  # TSI
)
"""Tags sent in ISO 8583 DE55 by default (the data the issuer needs to check the ARQC)."""


class AidConfig(_Model):
    """One application the terminal supports (Book 1 12.3.3, Book 3 10.7)."""

    aid: HexBytes = Field(min_length=5, max_length=16)
    partial_selection: bool = True
    """Application Selection Indicator: a card AID longer than ``aid`` also matches."""
    application_version: HexBytes = Field(min_length=2, max_length=2)
    """9F09, compared with the card's 9F08 (Book 3 10.4.1)."""
    tac_denial: HexBytes = Field(default=bytes(5), min_length=5, max_length=5)
    tac_online: HexBytes = Field(default=bytes.fromhex("DC4004F800"), min_length=5, max_length=5)
    tac_default: HexBytes = Field(default=bytes.fromhex("DC4000A800"), min_length=5, max_length=5)
    floor_limit: int | None = Field(default=None, ge=0)
    """Overrides the terminal's floor limit for this application."""


def default_aids() -> tuple[AidConfig, ...]:
    """Visa credit/debit, Visa Electron, Mastercard and Maestro with example TACs."""
    visa = {"application_version": bytes.fromhex("0096"), "tac_denial": bytes.fromhex("0010000000")}
    mc = {
        "application_version": bytes.fromhex("0002"),
        "tac_online": bytes.fromhex("F45084800C"),
        "tac_default": bytes.fromhex("F45084800C"),
    }
    return (
        AidConfig.model_validate({"aid": bytes.fromhex("A0000000031010"), **visa}),
        AidConfig.model_validate({"aid": bytes.fromhex("A0000000032010"), **visa}),
        AidConfig.model_validate({"aid": bytes.fromhex("A0000000041010"), **mc}),
        AidConfig.model_validate({"aid": bytes.fromhex("A0000000043060"), **mc}),
    )


class RandomSelection(_Model):
    """Random transaction selection (Book 3 10.6.2); percentages 0 to 99."""

    threshold: int = Field(default=0, ge=0)
    """Amounts (minor units) below this are selected with ``target_percent``."""
    target_percent: int = Field(default=0, ge=0, le=99)
    max_target_percent: int = Field(default=0, ge=0, le=99)

    @model_validator(mode="after")
    def _order(self) -> RandomSelection:
        if self.max_target_percent < self.target_percent:
            raise ValueError("max_target_percent must be at least target_percent")
        return self

    @property
    def enabled(self) -> bool:
        """False when both percentages are zero: no transaction is ever selected."""
        return self.max_target_percent > 0


class TerminalConfig(_Model):
    """What the kernel needs to know about the terminal it runs in."""

    aids: Annotated[tuple[AidConfig, ...], BeforeValidator(_tuple)] = Field(
        default_factory=default_aids, min_length=1
    )
    use_pse: bool = True
    """Try the Payment System Environment before the AID list (Book 1 12.3.2)."""
    floor_limit: int = Field(default=0, ge=0)
    """Terminal floor limit in minor units of ``currency_code`` (9F1B); 0 = all online."""
    random_selection: RandomSelection = Field(default_factory=RandomSelection)
    terminal_capabilities: HexBytes = Field(
        default=bytes.fromhex("E0E800"), min_length=3, max_length=3
    )
    """9F33: IC, magstripe, manual key entry; plaintext offline PIN, online PIN,
    signature, no CVM; no offline data authentication (this kernel does none)."""
    additional_capabilities: HexBytes = Field(
        default=bytes.fromhex("6000F0A001"), min_length=5, max_length=5
    )
    """9F40: goods, services; numeric, alphabetic and function keys; print and display."""
    terminal_type: int = Field(default=0x22, ge=0x11, le=0x36)
    """9F35: attended, merchant, offline with online capability."""
    country_code: int = Field(default=826, ge=1, le=999)
    currency_code: int = Field(default=826, ge=1, le=999)
    currency_exponent: int = Field(default=2, ge=0, le=3)
    merchant_category_code: str = Field(default="5999", pattern=r"^[0-9]{4}$")
    ifd_serial: str = Field(default="00000001", pattern=r"^[\x20-\x7E]{8}$")
    terminal_id: str | None = Field(default=None, pattern=r"^[\x20-\x7E]{8}$")
    merchant_id: str | None = Field(default=None, pattern=r"^[\x20-\x7E]{15}$")
    pinpad_present: bool = True
    """False when the PIN pad is missing or out of order (TVR byte 3 bit 5)."""
    extra_terminal_data: dict[str, HexBytes] = Field(default_factory=dict)
    """Further terminal data objects a PDOL or CDOL may ask for, tag (hex) -> value
    (e.g. ``{"9F66": "36000000"}``)."""
    de55_tags: Annotated[tuple[Tag, ...], BeforeValidator(_tuple)] = DEFAULT_DE55_TAGS

    @model_validator(mode="after")
    def _consistent(self) -> TerminalConfig:
        for tag in self.de55_tags:
            if _tags.is_sensitive(tag):
                raise ValueError(f"de55_tags: tag {tag:X} is sensitive and travels separately")
        for name in self.extra_terminal_data:
            try:
                int(name, 16)
            except ValueError:
                raise ValueError("extra_terminal_data: keys are tags in hex") from None
        aids = [a.aid for a in self.aids]
        if len(set(aids)) != len(aids):
            raise ValueError("aids: the same AID twice")
        rs = self.random_selection
        if rs.enabled and rs.threshold > self.floor_limit:
            raise ValueError("random_selection.threshold must not exceed floor_limit")
        return self

    @property
    def online_capable(self) -> bool:
        """False for offline-only terminal types (x3, x6; Book 4 Annex A1)."""
        return self.terminal_type & 0x0F not in (3, 6)

    @property
    def online_only(self) -> bool:
        """True for online-only terminal types (x1, x4)."""
        return self.terminal_type & 0x0F in (1, 4)

    @property
    def unattended(self) -> bool:
        """True for unattended terminal types (x4, x5, x6)."""
        return self.terminal_type & 0x0F in (4, 5, 6)

    def aid_config(self, adf_name: bytes) -> AidConfig | None:
        """The terminal AID an application's DF name matches (exactly, else partially)."""
        for entry in self.aids:
            if entry.aid == adf_name:
                return entry
        for entry in self.aids:
            if entry.partial_selection and adf_name.startswith(entry.aid):
                return entry
        return None
