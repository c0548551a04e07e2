"""ISO 8583:1987 over TCP: the acquirer connector (docs/iso8583.md).

- :mod:`.dialects`: the message layouts as typed pyiso8583 spec dicts (``binary``,
  ``ascii``) and the codec that reads them.
- :mod:`.framing`: length header (2-byte binary, 4 ASCII digits, none) and optional TPDU;
  the stream reassembler.
- :mod:`.stan`: STAN, RRN, transmission date/time and original data elements.
- :mod:`.messages`: the field mapping to and from :mod:`paycore.wire` messages.
- :mod:`.connector`: :class:`Iso8583Connector` (implements
  :class:`gateway_bridge.connectors.base.Connector`) and :class:`Iso8583Settings`.

Errors::

    paycore.errors.CodecError (ValueError)
    └── Iso8583Error
        ├── FramingError          the stream lost its frame boundaries (drop the link)
        ├── MessageDecodeError    a frame or an element that does not decode
        └── MessageEncodeError    fields the dialect cannot encode
    gateway_bridge.connectors.base.ConnectorError (raised by the connector)
    ├── ConnectorUnavailable      nothing was sent (not signed on, cannot encode)
    └── ConnectorTimeout          sent, no usable answer in time: outcome unknown
"""

from gateway_bridge.connectors.iso8583.connector import Iso8583Connector, Iso8583Settings
from gateway_bridge.connectors.iso8583.dialects import (
    ASCII,
    BINARY,
    DIALECTS,
    Dialect,
    DialectName,
    FieldOverride,
    Fields,
    FieldSpec,
    Spec,
    decode_message,
    derive,
    dialect,
    encode_message,
    measure,
)
from gateway_bridge.connectors.iso8583.errors import (
    FramingError,
    Iso8583Error,
    MessageDecodeError,
    MessageEncodeError,
)
from gateway_bridge.connectors.iso8583.framing import Frame, FrameDecoder, Framing, HeaderKind

__all__ = [
    "ASCII",
    "BINARY",
    "DIALECTS",
    "Dialect",
    "DialectName",
    "FieldOverride",
    "FieldSpec",
    "Fields",
    "Frame",
    "FrameDecoder",
    "Framing",
    "FramingError",
    "HeaderKind",
    "Iso8583Connector",
    "Iso8583Error",
    "Iso8583Settings",
    "MessageDecodeError",
    "MessageEncodeError",
    "Spec",
    "decode_message",
    "derive",
    "dialect",
    "encode_message",
    "measure",
]
