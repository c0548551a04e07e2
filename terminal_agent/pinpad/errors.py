"""The PIN pad driver's errors (the tree is drawn in :mod:`terminal_agent.pinpad`).

Transient errors say "try again later" (the pad is unplugged, the line is silent);
permanent ones say "this request will not work as it is" (the pad refused it, or answered
with something that is not the protocol). Messages never carry a PAN, key or PIN block.
"""

from __future__ import annotations

from paycore.pinpad import STATUS_MEANINGS, Status


class PinpadError(Exception):
    """Base of every error the PIN pad driver raises."""


class PinpadTransientError(PinpadError):
    """A failure of the link, not of the request: the same call may work later."""


class PinpadDisconnected(PinpadTransientError):
    """The port is not open (pad unplugged, or not plugged in yet), or it closed mid-call."""


class PinpadTimeout(PinpadTransientError):
    """No ACK after every retransmission, or no response within the command's timeout."""


class PinpadPermanentError(PinpadError):
    """The request cannot succeed as it is; retrying it unchanged does not help."""


class PinpadRefused(PinpadPermanentError):
    """The pad answered with a refusal status (protocol section 4.2).

    ``status`` is the :class:`paycore.pinpad.Status`; ``command`` the command code answered.
    ``Status.BUSY`` means a PIN entry is in progress: only CANCEL is taken until it ends.
    """

    def __init__(self, status: Status, command: int) -> None:
        self.status = status
        self.command = command
        meaning = STATUS_MEANINGS.get(status, "unknown status")
        super().__init__(f"PIN pad refused command {command:#04x}: {status.name} ({meaning})")


class PinpadReplyError(PinpadPermanentError):
    """The pad's response does not decode, or does not fit the request (a pad defect)."""
