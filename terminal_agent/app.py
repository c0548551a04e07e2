"""Assembling the agent from its settings: reader, PIN pad, link, journal, kernel.

The one place that turns configuration into running parts; the CLI and the benchmark
both go through :func:`open_agent`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from terminal_agent.cardholder import PadCardholder
from terminal_agent.config import AgentSettings, data_initial_key, read_secret_hex
from terminal_agent.display import Display, FanOut, PadDisplay
from terminal_agent.journal import TransactionJournal
from terminal_agent.kernel import EmvKernel
from terminal_agent.link import MqttLink
from terminal_agent.pinpad import PinpadDriver
from terminal_agent.reader import ReaderService
from terminal_agent.receipts import print_receipt, receipt_for
from terminal_agent.transaction import PaymentResult, PaymentTerminal, TransactionSettings


@dataclass
class Agent:
    terminal: PaymentTerminal
    reader: ReaderService
    pinpad: PinpadDriver
    link: MqttLink
    journal: TransactionJournal


def _receipt_printer(
    settings: AgentSettings, journal: TransactionJournal
) -> Callable[[PaymentResult], Awaitable[None]] | None:
    """Print the merchant and customer copies after each payment, when configured."""
    merchant, printer = settings.receipts, settings.printer
    if merchant is None or printer is None:
        return None

    async def print_copies(result: PaymentResult) -> None:
        record = await journal.get(result.local_id, history=True)
        if record is None:
            return
        for copy in ("merchant", "customer"):
            receipt = receipt_for(record, result, merchant, copy)
            await asyncio.to_thread(print_receipt, receipt, printer)

    return print_copies


@contextlib.asynccontextmanager
async def open_agent(settings: AgentSettings, display: Display) -> AsyncIterator[Agent]:
    """Every part started (devices are waited for in the background); all closed on exit."""
    initial_key, initial_key_id = data_initial_key(settings.keys)
    journal_key = read_secret_hex(settings.journal.key_file, 32)
    settings.journal.path.parent.mkdir(parents=True, exist_ok=True)
    journal = await TransactionJournal.open(settings.journal.path, journal_key)
    try:
        async with (
            ReaderService(settings.reader) as reader,
            PinpadDriver(settings.pinpad) as pinpad,
            MqttLink(
                settings.link_settings(),
                initial_key=initial_key,
                initial_key_id=initial_key_id,
                counters=journal,
            ) as link,
        ):
            display = FanOut([display, PadDisplay(pinpad)])
            printer = _receipt_printer(settings, journal)
            terminal = PaymentTerminal(
                kernel=EmvKernel(settings.emv),
                reader=reader,
                cardholder=PadCardholder(
                    pinpad,
                    display,
                    pin_key_slot=settings.pin_key_slot,
                    pin_timeout_s=settings.timeouts.pin_s,
                ),
                link=link,
                journal=journal,
                display=display,
                settings=TransactionSettings(
                    card_timeout_s=settings.timeouts.card_s,
                    host_timeout_s=settings.timeouts.host_s,
                ),
                on_result=printer,
            )
            yield Agent(terminal, reader, pinpad, link, journal)
    finally:
        await journal.close()
