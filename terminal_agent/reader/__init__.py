"""terminal_agent.reader: the card reader (PC/SC through pyscard) behind an async seam.

* :mod:`.channel`: :class:`CardChannel`, the seam the EMV kernel talks to
  (``await transmit(apdu) -> (data, sw1, sw2)``), house style 6;
* :mod:`.apdu`: GET RESPONSE on ``61xx`` and Le correction on ``6Cxx`` (EMV 4.4 Book 1
  9.3.1, ISO/IEC 7816-3 12.2), done once, in the transport layer;
* :mod:`.pcsc`: :class:`PcscAdapter` (pyscard in one dedicated thread) and
  :class:`PcscCard` (a powered card; a ``CardChannel``); PC/SC errors translated;
* :mod:`.service`: :class:`ReaderService`, which watches the reader, survives pcscd
  restarts, unplugged readers and pulled cards, and reports :class:`ReaderStatus`;
* :mod:`.settings`: :class:`ReaderSettings`.

Exceptions (``[T]`` transient: :class:`TransientReaderError`, wait and retry;
``[P]`` permanent: :class:`PermanentReaderError`)::

    ReaderError                      base; ``code`` = the PC/SC return code, if any
    ├── TransientReaderError
    │   ├── NoService           [T]  pcscd not running, stopped or restarted
    │   └── NoReader            [T]  no (such) reader, or it was unplugged
    ├── PermanentReaderError
    └── ApduTransportError           an exchange failed: what the kernel catches
        ├── CardRemovedError    [T]  the card left (or was reset by another program)
        ├── CardMuteError       [T]  the card does not answer (no ATR, no response)
        ├── ReaderLostError     [T]  pcscd or the reader went during the exchange
        └── CardProtocolError   [P]  a malformed answer: no SW, endless 61xx, 6Cxx twice

pyscard's errors (``smartcard.Exceptions.*``, ``EstablishContextException``) and PC/SC
return codes are translated at the adapter with ``raise ... from exc``
(:func:`translate_code`, :func:`translate_exception`). Messages never carry APDU data.
"""

from __future__ import annotations

from .channel import CardChannel
from .errors import (
    ApduTransportError,
    CardMuteError,
    CardProtocolError,
    CardRemovedError,
    NoReader,
    NoService,
    PermanentReaderError,
    ReaderError,
    ReaderLostError,
    TransientReaderError,
)
from .pcsc import TRACE, PcscAdapter, PcscCard, SlotStatus, translate_code, translate_exception
from .service import ReaderService, ReaderState, ReaderStatus
from .settings import ReaderSettings

__all__ = [
    "TRACE",
    "ApduTransportError",
    "CardChannel",
    "CardMuteError",
    "CardProtocolError",
    "CardRemovedError",
    "NoReader",
    "NoService",
    "PcscAdapter",
    "PcscCard",
    "PermanentReaderError",
    "ReaderError",
    "ReaderLostError",
    "ReaderService",
    "ReaderSettings",
    "ReaderState",
    "ReaderStatus",
    "SlotStatus",
    "TransientReaderError",
    "translate_code",
    "translate_exception",
]
