"""pytest fixtures for the emulated cards (registered by hardware.pytest_plugin).

``emv_card`` is a factory: ``emv_card("visa_credit", faults=Faults(...))`` returns a
fresh :class:`~hardware.cards.EmvCard` for that catalogue profile (not powered on).
"""

from __future__ import annotations

from typing import Protocol

import pytest

from .card import EmvCard
from .faults import Clock, Faults
from .profile import load_profile


class EmvCardFactory(Protocol):
    """What the ``emv_card`` fixture returns."""

    def __call__(
        self, name: str, *, faults: Faults | None = None, clock: Clock | None = None
    ) -> EmvCard:
        """A new card for catalogue profile ``name``."""
        ...


@pytest.fixture
def emv_card() -> EmvCardFactory:
    """Factory of emulated cards: profile name (+ faults, clock) -> EmvCard."""

    def make(name: str, *, faults: Faults | None = None, clock: Clock | None = None) -> EmvCard:
        return EmvCard(load_profile(name), faults=faults, clock=clock)

    return make
