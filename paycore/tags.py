"""The EMV tag dictionary (EMV 4.4 Book 3 Annex A, plus common scheme tags).

One row per data element: tag, name, format, source, the length in bytes where the
specification gives one, and whether the value is card data that must never reach a log
or a screen in clear (``sensitive``, used by :mod:`paycore.redact`).

Formats (Book 3 section 4.3): ``b`` binary, ``n`` numeric (BCD, right-justified, leading
zero nibbles), ``cn`` compressed numeric (BCD, left-justified, trailing ``F`` nibbles),
``an`` alphanumeric, ``ans`` alphanumeric special, ``var`` a template or a structure of its
own. Book 3's ``a`` (5F55, 5F56) is recorded as ``an``, and the Authorisation Code (89),
whose format Book 3 leaves to the payment systems, as ``an`` (six characters in
practice). The format drives DOL padding and truncation (:mod:`paycore.dol`).

Lengths are in bytes; ``None`` where Book 3 says "var." without a bound or where the length
depends on a key size (certificates, remainders).

Sensitivity, decided here:

* sensitive authentication data: track 1 (56), track 2 equivalent (57), track 2 data
  (9F6B), track 1 and 2 discretionary data (9F1F, 9F20, which carry CVV and PVV),
  transaction PIN data (99) and the dynamic card verification codes CVC3 (9F60, 9F61);
* cardholder data in PCI DSS terms: the PAN (5A), the cardholder name (5F20, 9F0B), the
  **expiration date (5F24) and the service code (5F30)**. PCI DSS protects expiry and
  service code only when stored with the PAN, but an APDU trace of a record carries them
  next to the PAN, nothing in this project needs them in a log, and hiding them costs
  nothing; so they are sensitive too. The IBAN (5F53) is an account number and also
  sensitive.
* not sensitive: the IIN/BIN (42, 9F0C), the last four digits (9F25), the Payment Account
  Reference (9F24, designed to be shareable), cryptograms and everything else.

Tags the dictionary does not know are not sensitive here (:func:`is_sensitive` is False);
the redactor still scans what it shows of them for PAN and track 2 shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["FORMATS", "SOURCES", "TAGS", "Format", "Source", "TagInfo", "is_sensitive", "lookup"]

Format = Literal["b", "n", "cn", "an", "ans", "var"]
Source = Literal["ICC", "terminal", "issuer"]

FORMATS: frozenset[str] = frozenset({"b", "n", "cn", "an", "ans", "var"})
SOURCES: frozenset[str] = frozenset({"ICC", "terminal", "issuer"})

BOOK3 = "EMV 4.4 Book 3 Annex A"
BOOK1 = "EMV 4.4 Book 1 (application selection)"
MASTERCARD = "Mastercard contactless (EMV Book C-2)"
VISA = "Visa contactless (EMV Book C-3)"
TOKENISATION = "EMV Payment Tokenisation"


@dataclass(frozen=True, slots=True, kw_only=True)
class TagInfo:
    """One data element of the dictionary."""

    tag: int
    name: str
    format: Format
    source: Source
    min_length: int | None = None
    max_length: int | None = None
    sensitive: bool = False
    origin: str = BOOK3

    @property
    def tag_hex(self) -> str:
        """The tag in upper-case hex (``"9F02"``)."""
        return f"{self.tag:X}"

    @property
    def constructed(self) -> bool:
        """True for a template (b6 of the first tag byte set)."""
        first = self.tag >> (8 * ((self.tag.bit_length() - 1) // 8))
        return bool(first & 0x20)


def _t(
    tag: int,
    name: str,
    fmt: Format,
    source: Source,
    min_length: int | None = None,
    max_length: int | None = None,
    *,
    sensitive: bool = False,
    origin: str = BOOK3,
) -> TagInfo:
    return TagInfo(
        tag=tag,
        name=name,
        format=fmt,
        source=source,
        min_length=min_length,
        max_length=max_length,
        sensitive=sensitive,
        origin=origin,
    )


_ENTRIES: tuple[TagInfo, ...] = (
    # --- EMV 4.4 Book 3 Annex A (and Book 1 for 9F0A), in tag order ------------------
    _t(0x42, "Issuer Identification Number (IIN)", "n", "ICC", 3, 3),
    _t(0x4F, "Application Dedicated File (ADF) Name (AID)", "b", "ICC", 5, 16),
    _t(0x50, "Application Label", "ans", "ICC", 1, 16),
    _t(0x57, "Track 2 Equivalent Data", "b", "ICC", None, 19, sensitive=True),
    _t(0x5A, "Application Primary Account Number (PAN)", "cn", "ICC", None, 10, sensitive=True),
    _t(0x5F20, "Cardholder Name", "ans", "ICC", 2, 26, sensitive=True),
    _t(0x5F24, "Application Expiration Date", "n", "ICC", 3, 3, sensitive=True),
    _t(0x5F25, "Application Effective Date", "n", "ICC", 3, 3),
    _t(0x5F28, "Issuer Country Code", "n", "ICC", 2, 2),
    _t(0x5F2A, "Transaction Currency Code", "n", "terminal", 2, 2),
    _t(0x5F2D, "Language Preference", "an", "ICC", 2, 8),
    _t(0x5F30, "Service Code", "n", "ICC", 2, 2, sensitive=True),
    _t(0x5F34, "Application PAN Sequence Number", "n", "ICC", 1, 1),
    _t(0x5F36, "Transaction Currency Exponent", "n", "terminal", 1, 1),
    _t(0x5F50, "Issuer URL", "ans", "ICC"),
    _t(0x5F53, "International Bank Account Number (IBAN)", "var", "ICC", None, 34, sensitive=True),
    _t(0x5F54, "Bank Identifier Code (BIC)", "var", "ICC", 8, 11),
    _t(0x5F55, "Issuer Country Code (alpha2 format)", "an", "ICC", 2, 2),
    _t(0x5F56, "Issuer Country Code (alpha3 format)", "an", "ICC", 3, 3),
    _t(0x5F57, "Account Type", "n", "terminal", 1, 1),
    _t(0x61, "Application Template", "b", "ICC", None, 252),
    _t(0x6F, "File Control Information (FCI) Template", "var", "ICC", None, 252),
    _t(0x70, "READ RECORD Response Message Template", "var", "ICC", None, 252),
    _t(0x71, "Issuer Script Template 1", "b", "issuer"),
    _t(0x72, "Issuer Script Template 2", "b", "issuer"),
    _t(0x73, "Directory Discretionary Template", "var", "ICC", None, 252),
    _t(0x77, "Response Message Template Format 2", "var", "ICC"),
    _t(0x80, "Response Message Template Format 1", "var", "ICC"),
    _t(0x81, "Amount, Authorised (Binary)", "b", "terminal", 4, 4),
    _t(0x82, "Application Interchange Profile", "b", "ICC", 2, 2),
    _t(0x83, "Command Template", "b", "terminal"),
    _t(0x84, "Dedicated File (DF) Name", "b", "ICC", 5, 16),
    _t(0x86, "Issuer Script Command", "b", "issuer", None, 261),
    _t(0x87, "Application Priority Indicator", "b", "ICC", 1, 1),
    _t(0x88, "Short File Identifier (SFI)", "b", "ICC", 1, 1),
    _t(0x89, "Authorisation Code", "an", "issuer", 6, 6),
    _t(0x8A, "Authorisation Response Code", "an", "issuer", 2, 2),
    _t(0x8C, "Card Risk Management Data Object List 1 (CDOL1)", "b", "ICC", None, 252),
    _t(0x8D, "Card Risk Management Data Object List 2 (CDOL2)", "b", "ICC", None, 252),
    _t(0x8E, "Cardholder Verification Method (CVM) List", "b", "ICC", 10, 252),
    _t(0x8F, "Certification Authority Public Key Index (ICC)", "b", "ICC", 1, 1),
    _t(0x90, "Issuer Public Key Certificate", "b", "ICC"),
    _t(0x91, "Issuer Authentication Data", "b", "issuer", 8, 16),
    _t(0x92, "Issuer Public Key Remainder", "b", "ICC"),
    _t(0x93, "Signed Static Application Data", "b", "ICC"),
    _t(0x94, "Application File Locator (AFL)", "var", "ICC", None, 252),
    _t(0x95, "Terminal Verification Results", "b", "terminal", 5, 5),
    _t(0x97, "Transaction Certificate Data Object List (TDOL)", "b", "ICC", None, 252),
    _t(0x98, "Transaction Certificate (TC) Hash Value", "b", "terminal", 20, 20),
    _t(
        0x99,
        "Transaction Personal Identification Number (PIN) Data",
        "b",
        "terminal",
        sensitive=True,
    ),
    _t(0x9A, "Transaction Date", "n", "terminal", 3, 3),
    _t(0x9B, "Transaction Status Information", "b", "terminal", 2, 2),
    _t(0x9C, "Transaction Type", "n", "terminal", 1, 1),
    _t(0x9D, "Directory Definition File (DDF) Name", "b", "ICC", 5, 16),
    _t(0x9F01, "Acquirer Identifier", "n", "terminal", 6, 6),
    _t(0x9F02, "Amount, Authorised (Numeric)", "n", "terminal", 6, 6),
    _t(0x9F03, "Amount, Other (Numeric)", "n", "terminal", 6, 6),
    _t(0x9F04, "Amount, Other (Binary)", "b", "terminal", 4, 4),
    _t(0x9F05, "Application Discretionary Data", "b", "ICC", 1, 32),
    _t(0x9F06, "Application Identifier (AID) - terminal", "b", "terminal", 5, 16),
    _t(0x9F07, "Application Usage Control", "b", "ICC", 2, 2),
    _t(0x9F08, "Application Version Number (ICC)", "b", "ICC", 2, 2),
    _t(0x9F09, "Application Version Number (terminal)", "b", "terminal", 2, 2),
    _t(
        0x9F0A,
        "Application Selection Registered Proprietary Data (ASRPD)",
        "b",
        "ICC",
        origin=BOOK1,
    ),
    _t(0x9F0B, "Cardholder Name Extended", "ans", "ICC", 27, 45, sensitive=True),
    _t(0x9F0C, "Issuer Identification Number Extended (IINE)", "n", "ICC", 3, 4),
    _t(0x9F0D, "Issuer Action Code - Default", "b", "ICC", 5, 5),
    _t(0x9F0E, "Issuer Action Code - Denial", "b", "ICC", 5, 5),
    _t(0x9F0F, "Issuer Action Code - Online", "b", "ICC", 5, 5),
    _t(0x9F10, "Issuer Application Data", "b", "ICC", None, 32),
    _t(0x9F11, "Issuer Code Table Index", "n", "ICC", 1, 1),
    _t(0x9F12, "Application Preferred Name", "ans", "ICC", 1, 16),
    _t(0x9F13, "Last Online Application Transaction Counter (ATC) Register", "b", "ICC", 2, 2),
    _t(0x9F14, "Lower Consecutive Offline Limit", "b", "ICC", 1, 1),
    _t(0x9F15, "Merchant Category Code", "n", "terminal", 2, 2),
    _t(0x9F16, "Merchant Identifier", "ans", "terminal", 15, 15),
    _t(0x9F17, "Personal Identification Number (PIN) Try Counter", "b", "ICC", 1, 1),
    _t(0x9F18, "Issuer Script Identifier", "b", "issuer", 4, 4),
    _t(0x9F1A, "Terminal Country Code", "n", "terminal", 2, 2),
    _t(0x9F1B, "Terminal Floor Limit", "b", "terminal", 4, 4),
    _t(0x9F1C, "Terminal Identification", "an", "terminal", 8, 8),
    _t(0x9F1D, "Terminal Risk Management Data", "b", "terminal", 1, 8),
    _t(0x9F1E, "Interface Device (IFD) Serial Number", "an", "terminal", 8, 8),
    _t(0x9F1F, "Track 1 Discretionary Data", "ans", "ICC", sensitive=True),
    _t(0x9F20, "Track 2 Discretionary Data", "cn", "ICC", sensitive=True),
    _t(0x9F21, "Transaction Time", "n", "terminal", 3, 3),
    _t(0x9F22, "Certification Authority Public Key Index (terminal)", "b", "terminal", 1, 1),
    _t(0x9F23, "Upper Consecutive Offline Limit", "b", "ICC", 1, 1),
    _t(0x9F26, "Application Cryptogram", "b", "ICC", 8, 8),
    _t(0x9F27, "Cryptogram Information Data", "b", "ICC", 1, 1),
    _t(0x9F2D, "ICC PIN Encipherment Public Key Certificate", "b", "ICC"),
    _t(0x9F2E, "ICC PIN Encipherment Public Key Exponent", "b", "ICC", 1, 3),
    _t(0x9F2F, "ICC PIN Encipherment Public Key Remainder", "b", "ICC"),
    _t(0x9F32, "Issuer Public Key Exponent", "b", "ICC", 1, 3),
    _t(0x9F33, "Terminal Capabilities", "b", "terminal", 3, 3),
    _t(0x9F34, "Cardholder Verification Method (CVM) Results", "b", "terminal", 3, 3),
    _t(0x9F35, "Terminal Type", "n", "terminal", 1, 1),
    _t(0x9F36, "Application Transaction Counter (ATC)", "b", "ICC", 2, 2),
    _t(0x9F37, "Unpredictable Number", "b", "terminal", 4, 4),
    _t(0x9F38, "Processing Options Data Object List (PDOL)", "b", "ICC"),
    _t(0x9F39, "Point-of-Service (POS) Entry Mode", "n", "terminal", 1, 1),
    _t(0x9F3A, "Amount, Reference Currency", "b", "terminal", 4, 4),
    _t(0x9F3B, "Application Reference Currency", "n", "ICC", 2, 8),
    _t(0x9F3C, "Transaction Reference Currency Code", "n", "terminal", 2, 2),
    _t(0x9F3D, "Transaction Reference Currency Exponent", "n", "terminal", 1, 1),
    _t(0x9F40, "Additional Terminal Capabilities", "b", "terminal", 5, 5),
    _t(0x9F41, "Transaction Sequence Counter", "n", "terminal", 2, 4),
    _t(0x9F42, "Application Currency Code", "n", "ICC", 2, 2),
    _t(0x9F43, "Application Reference Currency Exponent", "n", "ICC", 1, 4),
    _t(0x9F44, "Application Currency Exponent", "n", "ICC", 1, 1),
    _t(0x9F45, "Data Authentication Code", "b", "ICC", 2, 2),
    _t(0x9F46, "ICC Public Key Certificate", "b", "ICC"),
    _t(0x9F47, "ICC Public Key Exponent", "b", "ICC", 1, 3),
    _t(0x9F48, "ICC Public Key Remainder", "b", "ICC"),
    _t(0x9F49, "Dynamic Data Authentication Data Object List (DDOL)", "b", "ICC", None, 252),
    _t(0x9F4A, "Static Data Authentication Tag List", "var", "ICC"),
    _t(0x9F4B, "Signed Dynamic Application Data", "b", "ICC"),
    _t(0x9F4C, "ICC Dynamic Number", "b", "ICC", 2, 8),
    _t(0x9F4D, "Log Entry", "b", "ICC", 2, 2),
    _t(0x9F4E, "Merchant Name and Location", "ans", "terminal"),
    _t(0x9F4F, "Log Format", "b", "ICC"),
    _t(0xA5, "File Control Information (FCI) Proprietary Template", "var", "ICC"),
    _t(0xBF0C, "File Control Information (FCI) Issuer Discretionary Data", "var", "ICC", None, 222),
    # --- Payment tokenisation ---------------------------------------------------------
    _t(0x9F19, "Token Requestor ID", "n", "ICC", 6, 6, origin=TOKENISATION),
    _t(0x9F24, "Payment Account Reference (PAR)", "an", "ICC", 29, 29, origin=TOKENISATION),
    _t(0x9F25, "Last 4 Digits of PAN", "n", "ICC", 2, 2, origin=TOKENISATION),
    # --- Scheme (contactless kernel) tags --------------------------------------------
    _t(0x56, "Track 1 Data", "ans", "ICC", None, 76, sensitive=True, origin=MASTERCARD),
    _t(0x9F5B, "Issuer Script Results", "b", "terminal", origin=VISA),
    _t(0x9F60, "CVC3 (Track1)", "b", "ICC", 2, 2, sensitive=True, origin=MASTERCARD),
    _t(0x9F61, "CVC3 (Track2)", "b", "ICC", 2, 2, sensitive=True, origin=MASTERCARD),
    _t(0x9F62, "PCVC3 (Track1)", "b", "ICC", 6, 6, origin=MASTERCARD),
    _t(0x9F63, "PUNATC (Track1)", "b", "ICC", 6, 6, origin=MASTERCARD),
    _t(0x9F66, "Terminal Transaction Qualifiers (TTQ)", "b", "terminal", 4, 4, origin=VISA),
    _t(0x9F6B, "Track 2 Data", "b", "ICC", None, 19, sensitive=True, origin=MASTERCARD),
    _t(0x9F6C, "Card Transaction Qualifiers (CTQ)", "b", "ICC", 2, 2, origin=VISA),
    _t(
        0x9F6E,
        "Form Factor Indicator (Visa) / Third Party Data (Mastercard)",
        "b",
        "ICC",
        None,
        32,
        origin=VISA,
    ),
    _t(0x9F7C, "Customer Exclusive Data", "b", "ICC", None, 32, origin=VISA),
    _t(0xDF8115, "Error Indication", "b", "terminal", 6, 6, origin=MASTERCARD),
    _t(0xDF8116, "User Interface Request Data", "b", "terminal", 22, 22, origin=MASTERCARD),
    _t(0xDF8129, "Outcome Parameter Set", "b", "terminal", 8, 8, origin=MASTERCARD),
)


def _index(entries: tuple[TagInfo, ...]) -> Mapping[int, TagInfo]:
    table: dict[int, TagInfo] = {}
    for entry in entries:
        if entry.tag in table:
            raise ValueError(f"tag {entry.tag:X} is in the dictionary twice")
        table[entry.tag] = entry
    return MappingProxyType(dict(sorted(table.items())))


TAGS: Mapping[int, TagInfo] = _index(_ENTRIES)
"""Every known data element by tag (read-only, in tag order)."""

_SENSITIVE: frozenset[int] = frozenset(tag for tag, info in TAGS.items() if info.sensitive)


def lookup(tag: int) -> TagInfo | None:
    """The dictionary entry for ``tag``, or None when the tag is not in the dictionary."""
    return TAGS.get(tag)


def is_sensitive(tag: int) -> bool:
    """Whether the value of ``tag`` is card data to keep out of logs (unknown tags: False)."""
    return tag in _SENSITIVE
