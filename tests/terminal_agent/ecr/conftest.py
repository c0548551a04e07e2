"""Fixtures of the ECR API tests: the bridge rig and the emulated PIN pad."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware.mosquitto import MosquittoService
from hardware.pinpad import AesDukptKey, EmulatedPinpad
from tests.gateway_bridge.rig import PIN_IKID, Rig, make_rig


@pytest.fixture
def rig(tmp_path: Path, mosquitto_broker: MosquittoService) -> Rig:
    return make_rig(tmp_path, mosquitto_broker)


@pytest.fixture
def pad(rig: Rig, tmp_path: Path) -> Iterator[EmulatedPinpad]:
    emulated = EmulatedPinpad(
        kbpk=secrets.token_bytes(32),
        slots={1: AesDukptKey(rig.pin_initial_key, PIN_IKID)},
        link_path=tmp_path / "pos-pinpad",
    )
    emulated.start()
    yield emulated
    emulated.stop()
