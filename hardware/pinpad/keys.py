"""The emulated PIN pad's secure key store: KBPK, DUKPT key slots, PIN block building.

What a real PCI PTS PIN pad keeps in its tamper-responsive memory, here in plain Python:

* a key-block protection key (KBPK) under which TR-31 / ANSI X9.143 key blocks are loaded
  (paycore.tr31);
* numbered slots, each holding a DUKPT initial key with its transaction counter: AES DUKPT
  (ANSI X9.24-3-2017) for current pads, TDES DUKPT (ANSI X9.24-1:2009) for legacy ones
  (paycore.dukpt);
* the PIN block: ISO 9564-1 format 4 under the AES DUKPT PIN key of the next KSN, or
  format 0 under the TDES DUKPT PIN key (paycore.pinblock).

Key block acceptance (docs/pinpad-protocol.md section 5.6): key usage ``B1`` (initial DUKPT
key); algorithm ``A`` with optional block ``IK`` (16 hex digits, the AES Initial Key ID) or
algorithm ``T`` with optional block ``KS`` (20 hex digits, the initial KSN, counter zero).

Keys never appear in reprs, logs or error messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from paycore import dukpt, pinblock, tr31
from paycore.errors import KeyExhausted
from paycore.pinpad import (
    GetPinResponse,
    KeyStatusResponse,
    KeyType,
    LoadKeyResponse,
    PinBlockFormat,
    Status,
)

RandomSource = Callable[[int], bytes]


@dataclass(slots=True)
class AesDukptKey:
    """An AES DUKPT initial key (X9.24-3) in a slot, with its persistent counter."""

    initial_key: bytes = field(repr=False)
    initial_key_id: bytes
    next_counter: int = 1
    last_counter: int = 0

    @property
    def key_type(self) -> KeyType:
        return KeyType.AES256_DUKPT if len(self.initial_key) == 32 else KeyType.AES128_DUKPT

    def originator(self) -> dukpt.AesOriginator:
        return dukpt.AesOriginator(
            self.initial_key, self.initial_key_id, next_counter=self.next_counter
        )


@dataclass(slots=True)
class TdesDukptKey:
    """A TDES DUKPT IPEK (X9.24-1) in a slot, with its initial KSN and persistent counter."""

    ipek: bytes = field(repr=False)
    initial_ksn: bytes
    next_counter: int = 1
    last_counter: int = 0

    @property
    def key_type(self) -> KeyType:
        return KeyType.TDES_DUKPT

    def originator(self) -> dukpt.TdesOriginator:
        return dukpt.TdesOriginator(self.ipek, self.initial_ksn, next_counter=self.next_counter)


SlotKey = AesDukptKey | TdesDukptKey


class KeyStoreError(Exception):
    """A key operation refused with a protocol status (the message names no key)."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.name)
        self.status = status


class KeyStore:
    """The pad's KBPK and key slots ``0 .. slot_count - 1``."""

    def __init__(
        self,
        kbpk: bytes,
        slots: Mapping[int, SlotKey] | None = None,
        *,
        slot_count: int = 4,
        kbpk_algorithm: str = "A",
    ) -> None:
        if kbpk_algorithm not in ("A", "T"):
            raise ValueError("kbpk_algorithm is 'A' (AES) or 'T' (TDES)")
        self._kbpk = bytes(kbpk)
        self._kbpk_aes = kbpk_algorithm == "A"
        self.slot_count = slot_count
        self._slots: dict[int, SlotKey] = {}
        for number, key in (slots or {}).items():
            self._check_slot(number)
            self._slots[number] = key

    def __repr__(self) -> str:
        return f"KeyStore(slot_count={self.slot_count}, loaded={sorted(self._slots)})"

    @property
    def kbpk_kcv(self) -> bytes:
        """The KBPK's check value (AES: CMAC, 5 bytes; TDES: 3 bytes)."""
        return _kcv(self._kbpk, aes=self._kbpk_aes)

    def slot(self, number: int) -> SlotKey | None:
        """The key in slot ``number`` (None when empty); for tests and status."""
        self._check_slot(number)
        return self._slots.get(number)

    def _check_slot(self, number: int) -> None:
        if not 0 <= number < self.slot_count:
            raise KeyStoreError(Status.BAD_SLOT)

    def load(self, number: int, key_block: str) -> LoadKeyResponse:
        """Unwrap ``key_block`` under the KBPK into slot ``number``; counter starts at 1."""
        self._check_slot(number)
        try:
            header, key = tr31.unwrap(self._kbpk, key_block)
        except tr31.KeyBlockError:
            raise KeyStoreError(Status.KEY_BLOCK_TAMPERED) from None
        blocks = dict(header.optional_blocks)
        new: SlotKey
        try:
            if header.key_usage != "B1":
                raise ValueError("not an initial DUKPT key")
            if header.algorithm == "A" and len(key) in (16, 32):
                new = AesDukptKey(key, bytes.fromhex(blocks["IK"]))
                new.originator()  # checks the Initial Key ID length
            elif header.algorithm == "T" and len(key) == 16:
                new = TdesDukptKey(key, bytes.fromhex(blocks["KS"]))
                new.originator()  # checks the KSN length and zero counter
            else:
                raise ValueError("unsupported algorithm or key length")
        except (KeyError, ValueError):
            raise KeyStoreError(Status.KEY_BLOCK_REFUSED) from None
        self._slots[number] = new
        return LoadKeyResponse(key_type=new.key_type, kcv=_kcv(key, aes=header.algorithm == "A"))

    def status(self, number: int) -> KeyStatusResponse:
        """What slot ``number`` holds."""
        key = self.slot(number)
        if key is None:
            return KeyStatusResponse(number, KeyType.EMPTY, b"", 0, 0)
        key_id = key.initial_key_id if isinstance(key, AesDukptKey) else key.initial_ksn
        left = key.originator().keys_left
        return KeyStatusResponse(number, key.key_type, key_id, key.last_counter, left)

    def check_pin_key(self, number: int, block_format: PinBlockFormat) -> None:
        """Refuse (KeyStoreError) before prompting if the slot cannot make this block."""
        key = self.slot(number)
        if key is None:
            raise KeyStoreError(Status.NO_KEY)
        wanted = AesDukptKey if block_format is PinBlockFormat.ISO4_AES_DUKPT else TdesDukptKey
        if not isinstance(key, wanted):
            raise KeyStoreError(Status.WRONG_KEY_TYPE)
        if key.originator().keys_left == 0:
            raise KeyStoreError(Status.KEYS_EXHAUSTED)

    def encipher_pin(
        self,
        number: int,
        block_format: PinBlockFormat,
        pin: str,
        pan: str,
        *,
        random: RandomSource,
    ) -> GetPinResponse:
        """The enciphered PIN block under the next KSN of the slot; the counter advances
        (and is stored) before the key is used."""
        self.check_pin_key(number, block_format)
        key = self._slots[number]
        try:
            if isinstance(key, AesDukptKey):
                aes = key.originator().next_transaction()
                key.next_counter, key.last_counter = aes.counter + 1, aes.counter
                block = pinblock.encipher_format4_dukpt(
                    key.initial_key, aes.ksn, pin, pan, random=random
                )
                return GetPinResponse(block_format, aes.ksn, block)
            tdes = key.originator().next_transaction()
            key.next_counter, key.last_counter = tdes.counter + 1, tdes.counter
            block = pinblock.encipher_format0_tdes_dukpt(key.ipek, tdes.ksn, pin, pan)
            return GetPinResponse(block_format, tdes.ksn, block)
        except KeyExhausted:
            raise KeyStoreError(Status.KEYS_EXHAUSTED) from None
        except pinblock.PinBlockError:
            raise KeyStoreError(Status.BAD_VALUE) from None


def _kcv(key: bytes, *, aes: bool) -> bytes:
    """KCV per X9.24-1:2017 Annex A: AES keys CMAC (5 bytes), TDES keys legacy (3 bytes)."""
    if aes:
        return bytes.fromhex(tr31.kcv_aes_cmac(key, 5))
    return bytes.fromhex(tr31.kcv_tdes(key, 3))
