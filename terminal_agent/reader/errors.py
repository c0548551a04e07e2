"""The reader adapter's exceptions (the tree is drawn in :mod:`terminal_agent.reader`).

Transient errors (:class:`TransientReaderError`) go away by themselves: pcscd comes back,
the reader is plugged in again, the card is inserted again. The supervising
:class:`~terminal_agent.reader.service.ReaderService` waits them out. Permanent errors
(:class:`PermanentReaderError`) say the card broke the protocol: retrying the same
exchange with the same card gives the same answer.

:class:`ApduTransportError` is the branch the EMV kernel catches around
:meth:`CardChannel.transmit`: every failure of an exchange is one of its subclasses, and
the transaction with that card is over.

Messages never carry APDU data: it can be card data. PC/SC return codes are kept in
``code`` (an ``int``, e.g. ``0x80100069`` for ``SCARD_W_REMOVED_CARD``) when known.
"""

from __future__ import annotations

__all__ = [
    "ApduTransportError",
    "CardMuteError",
    "CardProtocolError",
    "CardRemovedError",
    "NoReader",
    "NoService",
    "PermanentReaderError",
    "ReaderError",
    "ReaderLostError",
    "TransientReaderError",
]


class ReaderError(Exception):
    """Base of every error the reader adapter raises.

    ``code`` is the PC/SC return code behind it, when there is one.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        self.code = code
        self.reason = message
        """The message without the PC/SC code."""
        if code is not None:
            message = f"{message} (PC/SC 0x{code & 0xFFFFFFFF:08X})"
        super().__init__(message)


class TransientReaderError(ReaderError):
    """Goes away without changing anything here: wait, then try again."""


class PermanentReaderError(ReaderError):
    """Trying again the same way will fail the same way."""


class NoService(TransientReaderError):
    """pcscd is not running, or was restarted and the PC/SC context is gone."""


class NoReader(TransientReaderError):
    """No reader (of the configured name) is connected, or it was unplugged."""


class ApduTransportError(ReaderError):
    """An exchange with the card failed; what the kernel catches around ``transmit``."""


class CardRemovedError(ApduTransportError, TransientReaderError):
    """The card left the reader (or was reset by someone else): its session is lost."""


class CardMuteError(ApduTransportError, TransientReaderError):
    """The card does not answer: no ATR, no response, or it cannot be powered."""


class ReaderLostError(ApduTransportError, TransientReaderError):
    """pcscd or the reader went away during an exchange (see ``__cause__``)."""


class CardProtocolError(ApduTransportError, PermanentReaderError):
    """The card's answer has the wrong shape (no status word, endless 61xx, 6Cxx twice)."""
