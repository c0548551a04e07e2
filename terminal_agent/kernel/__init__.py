"""The EMV contact kernel of the terminal agent (EMV 4.4 Book 1 12, Book 3 10, Book 4).

Public API:

* :class:`EmvKernel` (``start(channel, cardholder, transaction) -> FirstPhase``,
  ``complete(context, host_outcome) -> Outcome``) and :class:`FirstPhase`;
* the seams it needs (:mod:`.seams`): :class:`CardChannel`, :class:`Cardholder`,
  :class:`OnlinePinResult`, :class:`OfflinePinOutcome`;
* the data it works on (:mod:`.context`): :class:`Transaction`,
  :class:`TransactionContext`, :class:`Candidate`, :class:`OnlineRequest`,
  :class:`HostOutcome`, :class:`Outcome`, :class:`Decision`, :class:`AcType`;
  :class:`Tvr` and :class:`Tsi` (:mod:`.bits`);
* its configuration (:mod:`.config`): :class:`TerminalConfig`, :class:`AidConfig`,
  :class:`RandomSelection`.

Exceptions (:mod:`.errors`)::

    KernelError
    ├── CardChannelError (transient)   reader or card link failed
    ├── CardDataError                  the card broke the rules: transaction terminated
    ├── NoApplication                  nothing left to select ("Not accepted")
    ├── CardholderAbort                cancelled or timed out at the cardholder
    └── KernelSequenceError            the kernel was called out of order

The steps live in :mod:`.selection`, :mod:`.processing`, :mod:`.cvm`, :mod:`.risk` and
:mod:`.action`; each is a function over the context, testable on its own.
"""

from __future__ import annotations

from .bits import Tsi, Tvr
from .config import AidConfig, RandomSelection, TerminalConfig
from .context import (
    AcResponse,
    AcType,
    Candidate,
    Decision,
    HostOutcome,
    OnlineRequest,
    Outcome,
    Transaction,
    TransactionContext,
)
from .errors import (
    CardChannelError,
    CardDataError,
    CardholderAbort,
    KernelError,
    KernelSequenceError,
    NoApplication,
)
from .kernel import EmvKernel, FirstPhase
from .seams import (
    CardChannel,
    Cardholder,
    OfflinePinOutcome,
    OfflinePinStatus,
    OnlinePinResult,
    OnlinePinStatus,
)

__all__ = [
    "AcResponse",
    "AcType",
    "AidConfig",
    "Candidate",
    "CardChannel",
    "CardChannelError",
    "CardDataError",
    "Cardholder",
    "CardholderAbort",
    "Decision",
    "EmvKernel",
    "FirstPhase",
    "HostOutcome",
    "KernelError",
    "KernelSequenceError",
    "NoApplication",
    "OfflinePinOutcome",
    "OfflinePinStatus",
    "OnlinePinResult",
    "OnlinePinStatus",
    "OnlineRequest",
    "Outcome",
    "RandomSelection",
    "TerminalConfig",
    "Transaction",
    "TransactionContext",
    "Tsi",
    "Tvr",
]
