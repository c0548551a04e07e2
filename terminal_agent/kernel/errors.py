"""The exception tree of the EMV contact kernel (terminal_agent.kernel).

Every error the kernel raises is one of these; the transaction state machine catches the
branch it can act on::

    KernelError
    ├── CardChannelError (transient)   the reader or the link to the card failed (card
    │                                  pulled, reader gone); raised by CardChannel
    │                                  implementations, passed through by the kernel
    ├── CardDataError                  the card answered something EMV does not allow
    │                                  (unexpected status word, TLV that does not parse,
    │                                  missing mandatory or duplicate data, Book 3 7.5 and
    │                                  10.2: "terminate the transaction")
    ├── NoApplication                  no application the card and terminal share is left
    │                                  (Book 1 12.4, "Not accepted"); ``card_blocked`` when
    │                                  the card answered SELECT with 6A81
    ├── CardholderAbort                the cardholder cancelled, or walked away (timeout)
    └── KernelSequenceError            the kernel was driven out of order (a bug in the
                                       caller, e.g. complete() without an online request)

Messages name the step, the command and the status word or tag; they never carry card
data (PAN, track 2, expiry) nor PINs.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "CardChannelError",
    "CardDataError",
    "CardholderAbort",
    "KernelError",
    "KernelSequenceError",
    "NoApplication",
]


class KernelError(Exception):
    """Base of every error the EMV kernel raises."""

    transient: bool = False


class CardChannelError(KernelError):
    """The channel to the card failed; the transaction may be retried with the card."""

    transient = True


class CardDataError(KernelError):
    """The card's answer breaks the rules; the transaction is terminated (Book 3 10.2).

    ``step`` is the kernel step, ``command`` the command name, ``sw`` the status word
    when that is what was wrong, ``tag`` the data object when one was.
    """

    def __init__(
        self,
        message: str,
        *,
        step: str,
        command: str | None = None,
        sw: int | None = None,
        tag: int | None = None,
    ) -> None:
        self.step = step
        self.command = command
        self.sw = sw
        self.tag = tag
        where = [step]
        if command is not None:
            where.append(command)
        if sw is not None:
            where.append(f"SW {sw:04X}")
        if tag is not None:
            where.append(f"tag {tag:X}")
        super().__init__(f"{message} ({', '.join(where)})")


class NoApplication(KernelError):
    """No mutually supported, unblocked application: "Not accepted" (Book 1 12.4)."""

    def __init__(
        self, message: str = "no application to select", *, card_blocked: bool = False
    ) -> None:
        self.card_blocked = card_blocked
        super().__init__(message)


class CardholderAbort(KernelError):
    """The cardholder cancelled (selection, PIN entry) or did not answer in time."""

    def __init__(self, reason: Literal["cancelled", "timeout"], *, step: str) -> None:
        self.reason = reason
        self.step = step
        super().__init__(f"cardholder {reason} during {step}")


class KernelSequenceError(KernelError):
    """The kernel was called out of order."""
