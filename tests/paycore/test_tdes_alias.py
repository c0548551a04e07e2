"""Guard: psec and pyemv still do TDES under the installed cryptography.

psec and pyemv reach TripleDES through cryptography's deprecated alias
(``cryptography.hazmat.primitives.ciphers.algorithms.TripleDES``), which cryptography 48
removes. These known-answer tests call psec's TDES (``psec.des.encrypt_tdes_ecb``) and
pyemv's option A ICC master key derivation (``pyemv.kd.derive_icc_mk_a``) and compare them
with the published values in tests/vectors, so a cryptography upgrade that removes the
alias psec/pyemv use fails here, loudly, instead of somewhere in a PIN or ARQC path.
"""

from __future__ import annotations

from typing import Any

import psec.des
import pyemv.kd

from tests.vectors import load

TDES_DUKPT: dict[str, Any] = load("dukpt_tdes_x9_24_1")
EMV: dict[str, Any] = load("emv_cryptograms")


def test_psec_tdes_ecb_gives_the_published_pin_blocks() -> None:
    clear = bytes.fromhex(TDES_DUKPT["inputs"]["clear_pin_block_iso0"])
    for entry in TDES_DUKPT["initial_sequence"]:
        key = bytes.fromhex(entry["pin_encryption_key"])
        assert psec.des.encrypt_tdes_ecb(key, clear).hex().upper() == entry["encrypted_pin_block"]


def test_pyemv_derive_icc_mk_a_gives_the_option_a_example() -> None:
    example = EMV["option_a_worked_example"]
    derivation = next(
        entry
        for entry in EMV["icc_master_key_derivation"]
        if entry["option"] == "A" and entry["pan"] == example["pan"]
    )
    icc_mk = pyemv.kd.derive_icc_mk_a(
        bytes.fromhex(derivation["issuer_master_key"]), example["pan"], example["psn"]
    )
    assert icc_mk.hex().upper() == example["icc_mk = odd-parity(ZL||ZR)"]
    assert icc_mk.hex().upper() == derivation["icc_master_key"]
    # The published part is the key check value: TDES-ECB of zeros under the key (psec).
    kcv = psec.des.encrypt_tdes_ecb(icc_mk, bytes(8))[:3].hex().upper()
    assert kcv == derivation["icc_master_key_kcv"]
    assert kcv.startswith(derivation["kcv_in_source"])
