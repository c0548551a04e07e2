"""The terminal agent's PIN pad driver (docs/pinpad-protocol.md; DESIGN sections 2 and 3).

An asyncio driver for the serial PIN pad: :class:`PinpadDriver` opens the port with
pyserial, runs the host side of the link layer (section 3: sequence numbers, ACK/NAK,
retransmission, duplicate suppression, resynchronisation through the shared reassembler),
reconnects after an unplug, and offers the commands of section 5 as typed coroutines.
Framing and messages are the shared codec's (:mod:`paycore.pinpad`); settings are a
:class:`PinpadSettings`. The PIN never reaches this side: the pad returns an ISO 9564 block
enciphered under its DUKPT key, as a :class:`paycore.wire.EncryptedPinBlock`.

Errors::

    PinpadError
    ├── PinpadTransientError        the link failed; the same call may work later
    │   ├── PinpadDisconnected          port not open, or it closed during the call
    │   └── PinpadTimeout               no ACK after every retry, or no response in time
    └── PinpadPermanentError        the request cannot succeed as it is
        ├── PinpadRefused(status)       the pad answered a refusal status (4.2): .status
        └── PinpadReplyError            the pad's answer does not decode or does not fit

Encoding a request with a value its field cannot carry (a PIN pad field out of range)
raises the codec's :class:`paycore.pinpad.PinpadProtocolError` (a ValueError) before
anything is sent: that is a caller bug, not a pad error. Cardholder outcomes of GET PIN
(cancelled, timed out, bypassed) are not errors: they are :class:`PinEntryStatus` values.
"""

from __future__ import annotations

from terminal_agent.pinpad.driver import (
    KeyLoaded,
    LinkState,
    PinEntry,
    PinEntryStatus,
    PinpadDriver,
)
from terminal_agent.pinpad.errors import (
    PinpadDisconnected,
    PinpadError,
    PinpadPermanentError,
    PinpadRefused,
    PinpadReplyError,
    PinpadTimeout,
    PinpadTransientError,
)
from terminal_agent.pinpad.link import LinkStats
from terminal_agent.pinpad.settings import PinpadSettings
from terminal_agent.pinpad.subscriptions import Subscription

__all__ = [
    "KeyLoaded",
    "LinkState",
    "LinkStats",
    "PinEntry",
    "PinEntryStatus",
    "PinpadDisconnected",
    "PinpadDriver",
    "PinpadError",
    "PinpadPermanentError",
    "PinpadRefused",
    "PinpadReplyError",
    "PinpadSettings",
    "PinpadTimeout",
    "PinpadTransientError",
    "Subscription",
]
