"""Suite-wide fixtures: hypothesis profiles and the card-data leak guard.

Every test runs under :func:`no_card_data_in_logs`: all log records, at every level,
are captured, and the test fails if one of them contains a test PAN from the vectors or
anything that looks like a PAN or track 2 data. Sensitive values must go through the
redactor before they reach a log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.vectors import load

pytest_plugins = ["hardware.pytest_plugin"]

settings.register_profile(
    "default",
    deadline=None,  # CI machines are shared; speed is measured in bench/, not here
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")


def _known_test_pans() -> frozenset[str]:
    pans = {entry["pan"] for entry in load("luhn_test_pans")["test_pans"]}
    return frozenset(p for p in pans if len(p) >= 12)


_KNOWN_PANS = _known_test_pans()
# A run of 13 to 19 digits that passes Luhn, or a track 2 shape (PAN, separator, YYMM).
# No issuer number starts with 0 (ISO/IEC 7812 MII 0 is not issued), so zero-padded
# fields do not count; nor do digit runs inside a longer hex token (message ids, hashes),
# which would otherwise trip the guard at random. The known test PANs above are looked
# for everywhere, hex or not.
_DIGIT_RUN = re.compile(r"(?<![0-9A-Fa-f])[1-9]\d{12,18}(?![0-9A-Fa-f])")
_TRACK2 = re.compile(r"(?<![0-9A-Fa-f])\d{12,19}[=Dd]\d{4}")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_data_in(text: str) -> list[str]:
    """Why ``text`` would leak card data (empty when it is clean)."""
    found = [f"test PAN {p[:6]}...{p[-4:]}" for p in _KNOWN_PANS if p in text]
    found += [f"Luhn-valid digit run of {len(m)}" for m in _DIGIT_RUN.findall(text) if _luhn_ok(m)]
    found += ["track 2 shaped data" for _ in _TRACK2.findall(text)]
    return found


class _CaptureAll(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=1)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_card_data_in_logs() -> Iterator[_CaptureAll]:
    """Fail the test if any log record it produced carries card data."""
    handler = _CaptureAll()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(1)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    leaks = []
    for record in handler.records:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + repr(record.exc_info[1])
        for why in card_data_in(text):
            leaks.append(f"{record.name}:{record.levelname}: {why}")
    if leaks:
        pytest.fail("card data reached the logs:\n  " + "\n  ".join(leaks), pytrace=False)
