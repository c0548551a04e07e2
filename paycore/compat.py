"""Warnings from the libraries paycore builds on, for command-line programs to silence.

psec and pyemv still reach cryptography's TripleDES through its old import path and use
one- and two-key TDES keys (ISO 9797-1 MAC algorithm 3 runs single-DES steps), which
cryptography 43-47 warns about on every call. The warnings are about those libraries'
API use, not about anything an operator can act on. Only a program's ``main`` calls
:func:`silence_legacy_tdes_warnings`; library code never touches warning filters, and
the test suite filters the same warnings in its pytest configuration.
"""

from __future__ import annotations

import warnings

_MESSAGES = ("TripleDES has been moved", "Single-key TripleDES", "Two-key TripleDES")


def silence_legacy_tdes_warnings() -> None:
    """Ignore cryptography's TripleDES deprecation warnings raised from psec and pyemv."""
    from cryptography.utils import CryptographyDeprecationWarning

    for message in _MESSAGES:
        warnings.filterwarnings(
            "ignore",
            message=message,
            category=CryptographyDeprecationWarning,
            module=r"(psec|pyemv)\.",
        )
