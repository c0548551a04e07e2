"""The exception tree of paycore.

Every error paycore raises is one of these; callers catch the branch they can act on::

    PaycoreError
    ├── CodecError (also ValueError)   bad bytes or text from outside: where and what
    │   ├── paycore.tlv.DecodeError        BER-TLV that does not parse
    │   ├── paycore.dol.DolError           a DOL that does not parse
    │   ├── paycore.dukpt.KsnError         a KSN that cannot be used (length, counter)
    │   ├── paycore.pinblock.PinBlockError a PIN block or PIN that is not valid
    │   ├── paycore.tr31.KeyBlockError     a TR-31 key block that is malformed or fails its MAC
    │   ├── paycore.pan.PanError           not a valid PAN (length, digits, Luhn)
    │   ├── paycore.pinpad.PinpadProtocolError  a PIN pad frame or message that is not valid
    │   └── paycore.wire.MessageError      an MQTT payload that is not a valid message
    ├── EnvelopeError                  an envelope that cannot be opened (tampered, wrong key,
    │   │                              truncated); never says which, never returns data
    │   └── paycore.wire.EnvelopeExpired   authentic, but past its expiry
    └── KeyExhausted                   a DUKPT originator has no counter left

Codec errors carry the offset and the field (tag, element) they happened at, never the
value: a message built from card data would leak it into logs.
"""

from __future__ import annotations


class PaycoreError(Exception):
    """Base of every error raised by paycore."""


class CodecError(PaycoreError, ValueError):
    """Input that does not decode. ``offset`` and ``field`` say where, when known."""

    def __init__(
        self, message: str, *, offset: int | None = None, field: str | None = None
    ) -> None:
        self.offset = offset
        self.field = field
        where: list[str] = []
        if field is not None:
            where.append(field)
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class EnvelopeError(PaycoreError):
    """An envelope could not be opened. Deliberately vague: no oracle for an attacker."""


class KeyExhausted(PaycoreError):
    """A DUKPT originator has used every transaction counter it may use."""
