"""Errors of the ISO 8583 codec and framing (a branch of :class:`paycore.errors.CodecError`).

::

    Iso8583Error (paycore.errors.CodecError, so also ValueError)
    ├── FramingError          a length header, TPDU or frame size that cannot be used;
    │                         the byte stream has lost its frame boundaries: drop the link
    ├── MessageDecodeError    a frame whose bytes are not a message of the dialect, or a
    │                         field whose value is not what the field mapping expects
    └── MessageEncodeError    fields that the dialect cannot encode

Every error carries the field (``"2"``, ``"55"``, ``"length header"``) and the byte offset
where it happened, never a value: messages carry PANs and track 2 data. pyiso8583's own
``DecodeError`` / ``EncodeError`` keep the whole message (and the decoded fields) as
attributes, so they are translated here and *not* chained (no ``__cause__`` or
``__context__``), the same way :mod:`paycore.pinblock` treats psec's errors.
"""

from __future__ import annotations

from paycore.errors import CodecError


class Iso8583Error(CodecError):
    """Base of the ISO 8583 connector's codec errors."""


class FramingError(Iso8583Error):
    """The byte stream cannot be split into frames any more (the connection must go)."""


class MessageDecodeError(Iso8583Error):
    """A frame that is not a valid message of the dialect (the frame alone is skipped)."""


class MessageEncodeError(Iso8583Error):
    """Fields the dialect cannot encode (a value too long, non-hex binary data)."""
