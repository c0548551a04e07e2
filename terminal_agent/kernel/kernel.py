"""The EMV contact kernel: Book 3 chapter 10 as a sequence of named steps.

:class:`EmvKernel` runs the steps in the book's order over one
:class:`~terminal_agent.kernel.context.TransactionContext`:

1. application selection (Book 1 12) ............. :mod:`.selection`
2. initiate application processing (10.1) ....... :mod:`.processing`
3. read application data (10.2) .................. :mod:`.processing`
   offline data authentication (10.3): not performed, TVR says so
4. processing restrictions (10.4) ................ :mod:`.processing`
5. cardholder verification (10.5) ................ :mod:`.cvm`
6. terminal risk management (10.6) ............... :mod:`.risk`
7. terminal action analysis (10.7) ............... :mod:`.action`
8. first GENERATE AC, card action analysis (10.8)  :mod:`.action`

:meth:`EmvKernel.start` stops after step 8: the card approved or declined offline
(:attr:`FirstPhase.outcome`), or asked to go online (:attr:`FirstPhase.online_request`).
:meth:`EmvKernel.complete` takes the host's answer and runs step 9 (10.9 issuer
authentication, 10.10 completion: the second GENERATE AC).

Errors are the tree in :mod:`.errors`; a paycore codec error met while handling card
data becomes :class:`~terminal_agent.kernel.errors.CardDataError`.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from paycore.errors import CodecError

from . import action, cvm, processing, risk, selection
from .apdu import CardLink
from .config import TerminalConfig
from .context import HostOutcome, OnlineRequest, Outcome, Transaction, TransactionContext
from .errors import CardDataError, KernelSequenceError, NoApplication
from .risk import RandomSource
from .seams import CardChannel, Cardholder

__all__ = ["EmvKernel", "FirstPhase"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FirstPhase:
    """The kernel after the first GENERATE AC: exactly one of ``outcome`` (finished
    offline) and ``online_request`` (go online, then call :meth:`EmvKernel.complete`)."""

    context: TransactionContext
    outcome: Outcome | None = None
    online_request: OnlineRequest | None = None


class EmvKernel:
    """Runs EMV contact transactions for one terminal configuration."""

    def __init__(self, config: TerminalConfig, *, rng: RandomSource | None = None) -> None:
        self.config = config
        self.rng: RandomSource = rng if rng is not None else random.SystemRandom()

    async def start(
        self, channel: CardChannel, cardholder: Cardholder, transaction: Transaction
    ) -> FirstPhase:
        """Steps 1 to 8 with the card in ``channel``."""
        link = CardLink(channel)
        ctx = TransactionContext(
            config=self.config,
            transaction=transaction,
            unpredictable_number=self.rng.randbytes(4),
            link=link,
        )
        try:
            return await self._first_phase(ctx, link, cardholder)
        except CodecError as exc:
            raise CardDataError("card data does not decode", step="kernel") from exc
        finally:
            ctx.apdu_count = link.count

    async def _first_phase(
        self, ctx: TransactionContext, link: CardLink, cardholder: Cardholder
    ) -> FirstPhase:
        await selection.select_application(ctx, link, cardholder)
        while not await processing.initiate_application_processing(ctx, link):
            logger.info("GPO answered 6985: application removed, back to selection")
            selection.remove_selected(ctx)
            if not ctx.candidates:
                raise NoApplication("no application left after GPO refusals")
            await cardholder.show("TRY AGAIN")
            await selection.final_selection(ctx, link, cardholder)
        await processing.read_application_data(ctx, link)
        processing.offline_data_authentication(ctx)
        processing.processing_restrictions(ctx)
        await cvm.cardholder_verification(ctx, link, cardholder)
        await risk.terminal_risk_management(ctx, link, self.rng)
        requested = action.terminal_action_analysis(ctx)
        logger.debug("terminal action analysis: %s, %r", requested.name, ctx)
        outcome = await action.first_generate_ac(ctx, link, requested)
        if outcome is not None:
            return FirstPhase(ctx, outcome=outcome)
        return FirstPhase(ctx, online_request=action.online_request(ctx))

    async def complete(self, context: TransactionContext, host: HostOutcome) -> Outcome:
        """Step 9: issuer authentication and the second GENERATE AC."""
        link = context.link
        if link is None:
            raise KernelSequenceError("the context has no card link")
        try:
            return await action.complete(context, link, host)
        except CodecError as exc:
            raise CardDataError("card data does not decode", step="completion") from exc
        finally:
            context.apdu_count = link.count
