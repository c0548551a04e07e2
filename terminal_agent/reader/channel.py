"""The seam between the EMV kernel and the card reader (house style 6).

The kernel sends command APDUs (ISO/IEC 7816-4 section 5, EMV 4.4 Book 1 section 9)
through anything that has :meth:`CardChannel.transmit`. What it gets back is already
complete: the transport layer has fetched ``61xx`` data with GET RESPONSE and resent a
``6Cxx`` command with the right Le (EMV 4.4 Book 1 9.3.1, ISO/IEC 7816-3 12.2), once,
in the reader adapter, so the kernel never sees ``61xx`` or ``6Cxx``.

Failures are :class:`ApduTransportError` subclasses (``CardRemovedError``,
``CardMuteError``, ``ReaderLostError``, ``CardProtocolError``); the transaction with
that card is over when one is raised.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .errors import (
    ApduTransportError,
    CardMuteError,
    CardProtocolError,
    CardRemovedError,
    ReaderError,
    ReaderLostError,
)

__all__ = [
    "ApduTransportError",
    "CardChannel",
    "CardMuteError",
    "CardProtocolError",
    "CardRemovedError",
    "ReaderError",
    "ReaderLostError",
]


@runtime_checkable
class CardChannel(Protocol):
    """Something that exchanges APDUs with one powered card."""

    async def transmit(self, apdu: bytes) -> tuple[bytes, int, int]:
        """Send one command APDU; return the response data, SW1 and SW2.

        GET RESPONSE (``61xx``) and Le correction (``6Cxx``) are already done.
        Raises :class:`ApduTransportError` (a subclass) when the exchange fails.
        """
        ...
