"""The kernel's seams: what it needs of the card reader, the cardholder and the host.

House style 6: the kernel talks to narrow protocols, and other packages implement them
(the PC/SC adapter, the cashier screen and PIN pad, the MQTT link). Nothing here does
I/O.

* :class:`CardChannel` carries one command APDU to the card. The reader layer has
  already fetched ``61xx`` answers with GET RESPONSE and re-sent ``6Cxx`` commands with
  the right Le (EMV 4.4 Book 1 9.3.1), so the kernel sees final answers only. Failures
  of the link raise :class:`~terminal_agent.kernel.errors.CardChannelError`.
* :class:`Cardholder` is everything that needs a person. The kernel decides what to
  ask; the implementation asks it. The clear PIN never reaches the kernel: online PIN
  comes back as an opaque enciphered block, offline PIN as the outcome of the VERIFY
  the implementation sent itself (Book 3 6.5.12).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .context import Candidate

__all__ = [
    "CardChannel",
    "Cardholder",
    "OfflinePinOutcome",
    "OfflinePinStatus",
    "OnlinePinResult",
    "OnlinePinStatus",
]


class CardChannel(Protocol):
    """One command APDU in, the card's final answer out: (data, SW1, SW2)."""

    async def transmit(self, apdu: bytes) -> tuple[bytes, int, int]:
        """Send ``apdu``; raise CardChannelError when the card or reader is gone."""
        ...


class OnlinePinStatus(Enum):
    """How online PIN entry ended."""

    OK = "ok"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    BYPASSED = "bypassed"


@dataclass(frozen=True, slots=True, repr=False)
class OnlinePinResult:
    """The PIN pad's answer: ``block`` is opaque to the kernel (an enciphered PIN block
    with its KSN, from the PIN pad driver); present only when ``status`` is OK."""

    status: OnlinePinStatus
    block: object | None = None

    def __repr__(self) -> str:
        shown = "<PIN block>" if self.block is not None else "None"
        return f"OnlinePinResult({self.status.name}, block={shown})"


class OfflinePinStatus(Enum):
    """How one offline plaintext PIN verification ended (Book 3 6.5.12.4)."""

    VERIFIED = "verified"  # VERIFY answered 9000
    WRONG = "wrong"  # 63Cx, x tries left
    BLOCKED = "blocked"  # 6983 / 6984, or 63C0
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    BYPASSED = "bypassed"
    NOT_POSSIBLE = "not_possible"  # no PIN pad, or it failed


@dataclass(frozen=True, slots=True)
class OfflinePinOutcome:
    """The outcome of one PIN entry and VERIFY; ``tries_left`` from 63Cx when known."""

    status: OfflinePinStatus
    tries_left: int | None = None


class Cardholder(Protocol):
    """What needs a person: the cashier screen and the PIN pad, behind one seam."""

    async def choose_application(self, candidates: Sequence[Candidate]) -> int | None:
        """The index of the application the cardholder picks, or None to cancel."""
        ...

    async def confirm_application(self, candidate: Candidate) -> bool:
        """Whether the cardholder confirms the only application (87 b8 set)."""
        ...

    async def online_pin(self, pan: str, amount: int, currency: str) -> OnlinePinResult:
        """Capture an enciphered online PIN for ``pan`` (amount in minor units, ISO
        4217 numeric currency)."""
        ...

    async def offline_plaintext_pin(
        self, channel: CardChannel, tries_left: int | None
    ) -> OfflinePinOutcome:
        """Capture a PIN and send VERIFY (P2 80, format 2 block) through ``channel``."""
        ...

    async def signature_required(self) -> None:
        """Tell the cashier a signature is to be collected on the receipt."""
        ...

    async def show(self, message: str) -> None:
        """Show a standard message (Book 4 11.2: "TRY AGAIN", "INCORRECT PIN", ...)."""
        ...
