"""Fixtures of the cashier screen tests: the bridge rig and the emulated PIN pad."""

from __future__ import annotations

from tests.terminal_agent.ecr.conftest import pad, rig

__all__ = ["pad", "rig"]
