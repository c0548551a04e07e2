"""The wire contract between terminal and bridge (DESIGN section 4, docs/mqtt-protocol.md).

- :mod:`paycore.wire.topics`: topic names and the terminal id rule.
- :mod:`paycore.wire.messages`: the strict message models (requests, responses, status).
- :mod:`paycore.wire.envelope`: the AES-GCM envelope under AES DUKPT keys.
"""

from paycore.wire.envelope import (
    Aead,
    Envelope,
    EnvelopeExpired,
    EnvelopeHeader,
    decode_envelope,
    open_envelope,
    seal,
    working_key,
)
from paycore.wire.messages import (
    REVEAL,
    AuthorizationRequest,
    AuthorizationResponse,
    BatchCloseRequest,
    BatchCloseResponse,
    BatchTotal,
    BridgeStatus,
    EncryptedPinBlock,
    ErrorResponse,
    HealthCheck,
    MessageError,
    ReversalRequest,
    ReversalResponse,
    TerminalStatus,
    batch_differences,
    decode_json,
)

__all__ = [
    "REVEAL",
    "Aead",
    "AuthorizationRequest",
    "AuthorizationResponse",
    "BatchCloseRequest",
    "BatchCloseResponse",
    "BatchTotal",
    "BridgeStatus",
    "EncryptedPinBlock",
    "Envelope",
    "EnvelopeExpired",
    "EnvelopeHeader",
    "ErrorResponse",
    "HealthCheck",
    "MessageError",
    "ReversalRequest",
    "ReversalResponse",
    "TerminalStatus",
    "batch_differences",
    "decode_envelope",
    "decode_json",
    "open_envelope",
    "seal",
    "working_key",
]
