"""The MQTT link's errors (the tree is drawn in :mod:`terminal_agent.link`).

Transient errors say "the exchange did not happen, or we cannot tell": the caller decides
between a retry (same body, new envelope) and a reversal. Permanent ones say "the host's
answer arrived and cannot be used as it is". Messages carry message ids (cut short) and
reasons, never card data or keys.
"""

from __future__ import annotations


class LinkError(Exception):
    """Base of every error the MQTT link raises."""


class LinkTransientError(LinkError):
    """Nothing usable came back; the same request may work later."""


class HostTimeout(LinkTransientError):
    """The request was (or may have been) published and no response came in time.

    The only signal of a publish the broker denied (DESIGN 9: PUBACK 135 looks like
    success). The host may have approved: retry the same body, or reverse.
    ``message_ids`` are all the envelopes sent for it.
    """

    def __init__(self, message: str, message_ids: tuple[str, ...]) -> None:
        super().__init__(message)
        self.message_ids = message_ids


class LinkDown(LinkTransientError):
    """No broker connection before the deadline: the request was never published."""


class LinkPermanentError(LinkError):
    """A response arrived for the request but cannot be used; a retry gets the same."""


class ResponseRefused(LinkPermanentError):
    """An authentic response for the request, refused: past its expiry (or from the future)."""


class BadResponse(LinkPermanentError):
    """An authentic response for the request that does not answer it (wrong kind)."""
