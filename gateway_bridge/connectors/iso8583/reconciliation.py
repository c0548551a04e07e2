"""ISO 8583:1987 acquirer reconciliation: the 0500 request and its 0510 answer.

Used by both ends, like :mod:`.messages`: the connector builds the 0500 and reads the
0510 (:meth:`~gateway_bridge.connectors.iso8583.connector.Iso8583Connector.reconcile`);
the acquirer simulator reads the 0500, compares it with its own :class:`AcquirerTally`
and builds the 0510. docs/settlement.md has the table.

One 0500 per terminal (DE41) and settlement currency (DE50)::

    DE3  processing code 920000 (settlement; acquirer-specific, the common choice)
    DE7  transmission date and time        DE11 STAN        DE15 settlement date MMDD
    DE41 terminal id   DE42 merchant id    DE50 settlement currency (numeric)
    DE74 credits, number            (approved refunds)
    DE75 credits, reversal number   (refunds later reversed)
    DE76 debits, number             (approved purchases)
    DE77 debits, reversal number    (purchases voided or reversed)
    DE86 credits, amount            DE87 credits, reversal amount
    DE88 debits, amount             DE89 debits, reversal amount
    DE97 net settlement amount: ``D`` + 16 digits when debits minus debit reversals exceed
         credits minus credit reversals (the merchant is owed money), else ``C``

Counts are 10 digits, amounts 16 digits, in the currency's minor units. Reversed
transactions are in both the plain and the reversal totals, so
``net = DE88 - DE89 - DE86 + DE87``.

The 0510 echoes DE7, DE11, DE15, DE41, DE42 and DE50, carries DE39 ``00`` (the request
was understood), DE66 settlement code (``1`` in balance, ``2`` out of balance, ``3``
error) and the acquirer's *own* totals in DE74-DE89 and DE97, so a mismatch can be
reported element by element.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Final, Literal

from gateway_bridge.connectors.iso8583.dialects import Fields
from gateway_bridge.connectors.iso8583.errors import MessageDecodeError

__all__ = [
    "IN_BALANCE",
    "OUT_OF_BALANCE",
    "RECONCILIATION_ERROR",
    "SETTLEMENT_PROCESSING_CODE",
    "TOTALS_ELEMENTS",
    "AcquirerTally",
    "ReconciliationRequest",
    "ReconciliationResult",
    "ReconciliationTotals",
    "build_reconciliation_request",
    "parse_reconciliation_request",
    "parse_reconciliation_response",
    "reconciliation_response_fields",
    "totals_fields",
    "totals_from_fields",
]

SETTLEMENT_PROCESSING_CODE: Final = "920000"
IN_BALANCE: Final = "1"
OUT_OF_BALANCE: Final = "2"
RECONCILIATION_ERROR: Final = "3"

#: Totals attribute -> (data element, digits).
TOTALS_ELEMENTS: Final[Mapping[str, tuple[str, int]]] = {
    "credits_count": ("74", 10),
    "credits_reversal_count": ("75", 10),
    "debits_count": ("76", 10),
    "debits_reversal_count": ("77", 10),
    "credits_amount": ("86", 16),
    "credits_reversal_amount": ("87", 16),
    "debits_amount": ("88", 16),
    "debits_reversal_amount": ("89", 16),
}
_ECHOED: Final = ("7", "11", "15", "41", "42", "50")


@dataclass(frozen=True, slots=True)
class ReconciliationTotals:
    """The 1987 reconciliation totals for one terminal and currency (minor units)."""

    credits_count: int = 0
    credits_reversal_count: int = 0
    debits_count: int = 0
    debits_reversal_count: int = 0
    credits_amount: int = 0
    credits_reversal_amount: int = 0
    debits_amount: int = 0
    debits_reversal_amount: int = 0

    def __post_init__(self) -> None:
        for name, (_, digits) in TOTALS_ELEMENTS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int")
            if not 0 <= value < 10**digits:
                raise ValueError(f"{name} does not fit {digits} digits")

    @property
    def net(self) -> int:
        """Debits less debit reversals, less credits, plus credit reversals (signed)."""
        return (
            self.debits_amount
            - self.debits_reversal_amount
            - self.credits_amount
            + self.credits_reversal_amount
        )

    def differences(self, other: ReconciliationTotals) -> list[tuple[str, str, int, int]]:
        """``(attribute, element, self's value, other's value)`` for every total that differs."""
        out: list[tuple[str, str, int, int]] = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                out.append((f.name, TOTALS_ELEMENTS[f.name][0], mine, theirs))
        return out


@dataclass(frozen=True, slots=True)
class ReconciliationRequest:
    """What an 0500 says (the acquirer's view of it)."""

    terminal_id: str
    merchant_id: str
    currency_numeric: str
    totals: ReconciliationTotals


@dataclass(frozen=True, slots=True)
class ReconciliationResult:
    """The 0510: the settlement code and the acquirer's own totals."""

    settlement_code: str
    acquirer_totals: ReconciliationTotals

    @property
    def in_balance(self) -> bool:
        return self.settlement_code == IN_BALANCE


def totals_fields(totals: ReconciliationTotals) -> Fields:
    """DE74-DE89 and DE97 for ``totals``."""
    out: Fields = {}
    for name, (element, digits) in TOTALS_ELEMENTS.items():
        out[element] = f"{getattr(totals, name):0{digits}d}"
    net = totals.net
    out["97"] = f"{'D' if net > 0 else 'C'}{abs(net):016d}"
    return out


def totals_from_fields(message: Mapping[str, str]) -> ReconciliationTotals:
    """Read DE74-DE89 (absent = 0) and check DE97 against them if present."""
    values: dict[str, int] = {}
    for name, (element, digits) in TOTALS_ELEMENTS.items():
        raw = message.get(element, "0")
        if not raw.isdigit() or not raw.isascii() or len(raw) > digits:
            raise MessageDecodeError("total is not numeric", field=element)
        values[name] = int(raw)
    totals = ReconciliationTotals(**values)
    net = message.get("97")
    if net is not None:
        sign, digits_part = net[:1], net[1:]
        if sign not in ("C", "D") or not digits_part.isdigit() or not digits_part.isascii():
            raise MessageDecodeError("net settlement amount is not C/D and digits", field="97")
        signed = int(digits_part) if sign == "D" else -int(digits_part)
        if signed != totals.net:
            raise MessageDecodeError("net settlement amount disagrees with the totals", field="97")
    return totals


def build_reconciliation_request(
    *,
    terminal_id: str,
    merchant_id: str,
    currency_numeric: str,
    totals: ReconciliationTotals,
    stan: int,
    transmission: str,
    settlement_date: str,
) -> Fields:
    """The 0500 (``terminal_id`` and ``merchant_id`` already padded for DE41/DE42)."""
    message: Fields = {
        "t": "0500",
        "3": SETTLEMENT_PROCESSING_CODE,
        "7": transmission,
        "11": f"{stan:06d}",
        "15": settlement_date,
        "41": terminal_id,
        "50": currency_numeric,
    }
    if merchant_id:
        message["42"] = merchant_id
    message.update(totals_fields(totals))
    return message


def _required(message: Mapping[str, str], element: str) -> str:
    value = message.get(element)
    if value is None:
        raise MessageDecodeError("required element missing", field=element)
    return value


def parse_reconciliation_request(message: Mapping[str, str]) -> ReconciliationRequest:
    """Read an 0500; :class:`MessageDecodeError` names the element that is wrong."""
    if message.get("t") != "0500":
        raise MessageDecodeError("not an 0500", field="t")
    if message.get("3", SETTLEMENT_PROCESSING_CODE)[:2] != SETTLEMENT_PROCESSING_CODE[:2]:
        raise MessageDecodeError("processing code is not settlement", field="3")
    currency = _required(message, "50")
    if len(currency) != 3 or not currency.isdigit():
        raise MessageDecodeError("settlement currency is not 3 digits", field="50")
    return ReconciliationRequest(
        terminal_id=_required(message, "41").strip(),
        merchant_id=message.get("42", "").strip(),
        currency_numeric=currency,
        totals=totals_from_fields(message),
    )


def reconciliation_response_fields(
    request: Mapping[str, str], own: ReconciliationTotals, code: Literal["1", "2", "3"]
) -> Fields:
    """The 0510 for ``request``: settlement code ``code`` and the acquirer's totals."""
    answer: Fields = {k: request[k] for k in _ECHOED if k in request}
    answer.update({"t": "0510", "39": "00", "66": code})
    answer.update(totals_fields(own))
    return answer


def parse_reconciliation_response(message: Mapping[str, str]) -> ReconciliationResult:
    """Read an 0510; :class:`MessageDecodeError` if it is not one."""
    if message.get("t") != "0510":
        raise MessageDecodeError("not an 0510", field="t")
    code = _required(message, "66")
    if code not in (IN_BALANCE, OUT_OF_BALANCE, RECONCILIATION_ERROR):
        raise MessageDecodeError("unknown settlement code", field="66")
    return ReconciliationResult(settlement_code=code, acquirer_totals=totals_from_fields(message))


class AcquirerTally:
    """The acquirer's running totals per terminal (DE41) and currency, since the last 0500.

    :meth:`take` hands them over and starts a new period (the acquirer's cutover).
    Thread-safe (one lock).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], dict[str, int]] = {}

    def _add(self, terminal_id: str, currency_numeric: str, **deltas: int) -> None:
        with self._lock:
            row = self._totals.setdefault((terminal_id, currency_numeric), {})
            for name, delta in deltas.items():
                row[name] = row.get(name, 0) + delta

    def approved(
        self,
        terminal_id: str,
        currency_numeric: str,
        kind: Literal["purchase", "refund", "void"],
        amount: int,
    ) -> None:
        """An approved purchase (debit), refund (credit) or void (debit reversal)."""
        if kind == "purchase":
            self._add(terminal_id, currency_numeric, debits_count=1, debits_amount=amount)
        elif kind == "refund":
            self._add(terminal_id, currency_numeric, credits_count=1, credits_amount=amount)
        else:
            self._add(
                terminal_id,
                currency_numeric,
                debits_reversal_count=1,
                debits_reversal_amount=amount,
            )

    def reversed(
        self,
        terminal_id: str,
        currency_numeric: str,
        kind: Literal["purchase", "refund", "void"],
        amount: int,
    ) -> None:
        """A reversal of an approved purchase or refund (a reversed void is not counted)."""
        if kind == "purchase":
            self._add(
                terminal_id,
                currency_numeric,
                debits_reversal_count=1,
                debits_reversal_amount=amount,
            )
        elif kind == "refund":
            self._add(
                terminal_id,
                currency_numeric,
                credits_reversal_count=1,
                credits_reversal_amount=amount,
            )

    def peek(self, terminal_id: str, currency_numeric: str) -> ReconciliationTotals:
        with self._lock:
            return ReconciliationTotals(**self._totals.get((terminal_id, currency_numeric), {}))

    def take(self, terminal_id: str, currency_numeric: str) -> ReconciliationTotals:
        """The totals of the period, and a new, empty period."""
        with self._lock:
            return ReconciliationTotals(**self._totals.pop((terminal_id, currency_numeric), {}))
