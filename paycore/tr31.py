"""TR-31 / ANSI X9.143 key blocks (versions A, B, C, D) through psec.tr31, and key check values.

Standards:

* ASC X9 TR-31:2018 and ANSI X9.143:2021, clause 6 (header: version ID, length, key usage,
  algorithm, mode of use, key version number, exportability, optional blocks) and clause 7
  (binding methods): version A/C key variant binding (TDES), B TDES key derivation binding
  (CMAC KDF, TDES-CMAC MAC, CBC with the MAC as IV), D AES key derivation binding (the
  same with AES). Version E (ISO 20038 without padding) is not supported by psec 1.3.
* ANSI X9.24-1:2017, 7.7 / Annex A: key check values. :func:`kcv_tdes` is the legacy TDES
  KCV (leftmost 3 bytes of TDES-ECB of 8 zero bytes); :func:`kcv_aes_cmac` is the CMAC KCV
  used for AES keys (leftmost 3 bytes of AES-CMAC over 16 zero bytes), which is what the
  X9.143/TR-31 published examples print (tests/vectors/tr31_keyblock.json, A.7.4).

psec parses and verifies blocks (:func:`unwrap`) and supplies the header codec, the key
derivations and the MACs. psec's own ``wrap`` takes its padding from ``os.urandom``; to keep
randomness a parameter, :func:`wrap` follows the same steps with the pad drawn from
``random`` (which lets the published blocks be reproduced byte for byte in the tests).

Known limitation (psec 1.3.0): an optional block longer than 255 characters has an
extended length ``00 | LL | length``; psec reads ``LL`` as a count of *bytes* (``02`` ->
four hex digits) while the ANSI X9.143 examples use a count of *characters* (``04``).
Blocks written the X9.143 way are refused with :class:`KeyBlockError`, never misread
(the MAC covers the header, so a misparse cannot yield a key). Blocks :func:`wrap` writes
use psec's convention.

:func:`unwrap` accepts only upper-case hex in the encrypted key data and the MAC (psec
also reads lower case); with that, changing any single character of a block makes it fail.

Header checks are format checks only (as in psec): whether a key usage, algorithm and mode
of use are acceptable for a purpose is the caller's decision, after :func:`unwrap`.

Errors: every failure is a :class:`KeyBlockError` with a ``field`` (and the header offset
where it has one); psec's messages, which can quote block contents, are never passed on,
not even as ``__cause__``/``__context__``. A MAC failure does not say whether the block was
tampered with or the KBPK is wrong.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from psec import aes as _aes
from psec import des as _des
from psec import tr31 as _tr31

from paycore.errors import CodecError

__all__ = [
    "KeyBlockError",
    "KeyBlockHeader",
    "RandomSource",
    "kcv",
    "kcv_aes_cmac",
    "kcv_tdes",
    "unwrap",
    "wrap",
]

RandomSource = Callable[[int], bytes]
"""``random(n)`` returns ``n`` random bytes (``secrets.token_bytes`` in production)."""

_VERSIONS: Final = frozenset("ABCD")
_BLOCK_SIZE: Final = {"A": 8, "B": 8, "C": 8, "D": 16}
_KBPK_LENGTHS: Final = {
    "A": frozenset({8, 16, 24}),
    "B": frozenset({16, 24}),
    "C": frozenset({8, 16, 24}),
    "D": frozenset({16, 24, 32}),
}
# psec's default length to mask a key to, by header algorithm (T/D: TDES, A: AES-256).
_MASK_TO: Final = {"T": 24, "D": 24, "A": 32}
_MAX_KEY_BLOCK: Final = 9999
_UPPER_HEX: Final = frozenset("0123456789ABCDEF")


class KeyBlockError(CodecError):
    """A key block that is malformed, fails its MAC, or cannot be built. No key material."""


# -- psec error translation -----------------------------------------------------------------

# psec message prefix -> (our message, field, header offset or None)
_PSEC_REASONS: Final[tuple[tuple[str, str, str, int | None], ...]] = (
    ("Header must be ASCII alphanumeric", "header is not alphanumeric", "header", 0),
    ("Header length", "header is shorter than 16 characters", "header", 0),
    ("Version ID", "key block version is not supported", "version_id", 0),
    ("Key block version ID", "key block version is not supported", "version_id", 0),
    ("Key usage", "key usage is malformed", "key_usage", 5),
    ("Algorithm", "algorithm is malformed", "algorithm", 7),
    ("Mode of use", "mode of use is malformed", "mode_of_use", 8),
    ("Version number", "key version number is malformed", "version_num", 9),
    ("Exportability", "exportability is malformed", "exportability", 11),
    ("Number of blocks", "number of optional blocks is malformed", "optional_blocks", 12),
    ("Block", "optional block is malformed", "optional_blocks", 16),
    ("Key block header length", "key block length field is wrong", "length", 1),
    ("Key block length", "key block length is not a whole number of cipher blocks", "length", 1),
    ("Total key block length", "key block would exceed 9999 characters", "length", 1),
    ("Key block MAC doesn't match", "key block MAC does not verify", "mac", None),
    ("Key block MAC", "key block MAC is malformed", "mac", None),
    ("Encrypted key", "encrypted key data is malformed", "key_data", None),
    ("Decrypted key", "decrypted key data is malformed", "key_data", None),
    ("KBPK length", "KBPK length does not suit the key block version", "kbpk", None),
)


def _translate(exc: ValueError) -> KeyBlockError:
    text = str(exc)
    for prefix, message, field, offset in _PSEC_REASONS:
        if text.startswith(prefix):
            return KeyBlockError(message, field=field, offset=offset)
    return KeyBlockError("key block is not valid")


# -- header ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyBlockHeader:
    """The TR-31 / X9.143 header of a key block, without its length and pad block.

    ``optional_blocks`` is a tuple of ``(block_id, data)`` pairs in order, excluding the pad
    block ``PB`` (recomputed when a block is written). The reserved / key-context field is
    written as ``00``.
    """

    version_id: str
    key_usage: str
    algorithm: str
    mode_of_use: str
    version_num: str = "00"
    exportability: str = "N"
    optional_blocks: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.version_id not in _VERSIONS:
            raise KeyBlockError("key block version is not supported", field="version_id")
        ids = [block_id for block_id, _ in self.optional_blocks]
        if len(set(ids)) != len(ids):
            raise KeyBlockError("optional block IDs repeat", field="optional_blocks")
        if any(block_id.upper() == "PB" for block_id in ids):
            raise KeyBlockError("pad block PB is computed, not given", field="optional_blocks")
        self.to_psec()  # every other field check is psec's

    def to_psec(self) -> _tr31.Header:
        """This header as a psec ``Header``."""
        failure: KeyBlockError
        try:
            header = _tr31.Header(
                self.version_id,
                self.key_usage,
                self.algorithm,
                self.mode_of_use,
                self.version_num,
                self.exportability,
            )
            for block_id, data in self.optional_blocks:
                header.blocks[block_id] = data
            return header
        except (ValueError, TypeError) as exc:
            failure = (
                _translate(exc)
                if isinstance(exc, ValueError)
                else KeyBlockError("header field is not a string", field="header")
            )
        raise failure

    @classmethod
    def from_psec(cls, header: _tr31.Header) -> KeyBlockHeader:
        """A psec ``Header`` as a ``KeyBlockHeader``."""
        return cls(
            version_id=header.version_id,
            key_usage=header.key_usage,
            algorithm=header.algorithm,
            mode_of_use=header.mode_of_use,
            version_num=header.version_num,
            exportability=header.exportability,
            optional_blocks=tuple(header.blocks.items()),
        )

    @classmethod
    def parse(cls, text: str) -> KeyBlockHeader:
        """The header at the start of ``text`` (a header, or a whole key block; not verified)."""
        if not isinstance(text, str) or not text.isascii():
            raise KeyBlockError("header is not ASCII text", field="header")
        header = _tr31.Header()
        failure: KeyBlockError
        try:
            header.load(text)
            return cls.from_psec(header)
        except ValueError as exc:
            failure = _translate(exc)
        raise failure

    def __str__(self) -> str:
        """The header text as psec writes it (length field = header length only)."""
        return str(self.to_psec())


# -- wrap / unwrap --------------------------------------------------------------------------


def _check_kbpk(kbpk: bytes, version_id: str) -> None:
    if not isinstance(kbpk, bytes | bytearray) or len(kbpk) not in _KBPK_LENGTHS[version_id]:
        raise KeyBlockError("KBPK length does not suit the key block version", field="kbpk")


def _draw(random: RandomSource, count: int) -> bytes:
    data = random(count)
    if not isinstance(data, bytes | bytearray) or len(data) != count:
        raise KeyBlockError("random source returned the wrong number of bytes", field="random")
    return bytes(data)


class _KeyBlock(_tr31.KeyBlock):
    """psec's KeyBlock, with the padding of a new block drawn from a given random source."""

    def wrap_with_pad(self, key: bytes, masked_key_len: int, random: RandomSource) -> str:
        """TR-31 A.3 / X9.143 7.3: ``len(bits) | key | pad``, MAC-bound and enciphered."""
        version = self.header.version_id
        block_size = _BLOCK_SIZE[version]
        header = self.header.dump(masked_key_len)
        extra_pad = masked_key_len - len(key)
        pad_len = block_size - ((2 + len(key) + extra_pad) % block_size)
        pad = _draw(random, pad_len + extra_pad)
        clear = (len(key) * 8).to_bytes(2, "big") + key + pad
        if version == "B":
            kbek, kbak = self._b_derive()
            mac = self._b_generate_mac(kbak, header, clear)
            encrypted = _des.encrypt_tdes_cbc(kbek, mac, clear)
        elif version == "D":
            kbek, kbak = self._d_derive()
            mac = self._d_generate_mac(kbak, header, clear)
            encrypted = _aes.encrypt_aes_cbc(kbek, mac, clear)
        else:  # A, C: key variant binding; IV = first 8 header characters, MAC over ciphertext
            kbek, kbak = self._c_derive()
            encrypted = _des.encrypt_tdes_cbc(kbek, header.encode("ascii")[:8], clear)
            mac = self._c_generate_mac(kbak, header, encrypted)
        return header + encrypted.hex().upper() + mac.hex().upper()


def wrap(
    kbpk: bytes,
    header: KeyBlockHeader | str,
    key: bytes,
    *,
    random: RandomSource | None,
    masked_key_len: int | None = None,
) -> str:
    """Wrap ``key`` under ``kbpk`` into a TR-31 / X9.143 key block.

    ``header`` is a :class:`KeyBlockHeader` or header text (its length field is ignored).
    ``random`` supplies the padding; ``None`` means ``secrets.token_bytes``.
    ``masked_key_len`` pads the key as if it were that many bytes long, hiding its length;
    by default (as psec) a TDES key is masked to 24 bytes and an AES key to 32.
    """
    parsed = header if isinstance(header, KeyBlockHeader) else KeyBlockHeader.parse(header)
    _check_kbpk(kbpk, parsed.version_id)
    if not isinstance(key, bytes | bytearray) or not 1 <= len(key) <= 0xFFFF // 8:
        raise KeyBlockError("key length is not valid", field="key")
    masked = max(len(key), _MASK_TO.get(parsed.algorithm, len(key)))
    if masked_key_len is not None:
        masked = max(masked_key_len, len(key))
    source = secrets.token_bytes if random is None else random
    block = _KeyBlock(bytes(kbpk), parsed.to_psec())
    failure: KeyBlockError
    try:
        return block.wrap_with_pad(bytes(key), masked, source)
    except ValueError as exc:
        failure = exc if isinstance(exc, KeyBlockError) else _translate(exc)
    raise failure


def unwrap(kbpk: bytes, key_block: str) -> tuple[KeyBlockHeader, bytes]:
    """Verify ``key_block`` under ``kbpk``; return its header and the key it protects.

    Raises :class:`KeyBlockError` for anything malformed, a MAC that does not verify
    (tampered block or wrong KBPK) or a KBPK of the wrong length for the version.
    """
    if not isinstance(key_block, str) or not key_block.isascii() or not key_block.isprintable():
        raise KeyBlockError("key block is not printable ASCII text")
    if len(key_block) > _MAX_KEY_BLOCK:
        raise KeyBlockError("key block is longer than 9999 characters", field="length")
    if not isinstance(kbpk, bytes | bytearray):
        raise KeyBlockError("KBPK must be bytes", field="kbpk")
    failure: KeyBlockError
    try:
        header_len = _tr31.Header().load(key_block)
        _check_upper_hex(key_block, header_len)
        header, key = _tr31.unwrap(bytes(kbpk), key_block)
        return KeyBlockHeader.from_psec(header), key
    except ValueError as exc:
        failure = exc if isinstance(exc, KeyBlockError) else _translate(exc)
    raise failure


def _check_upper_hex(key_block: str, start: int) -> None:
    """The encrypted key data and the MAC are upper-case hex (X9.143 6.1, TR-31 A.2).

    psec also takes lower case, which would let one key block be written several ways;
    only the canonical form is accepted here.
    """
    for index in range(start, len(key_block)):
        if key_block[index] not in _UPPER_HEX:
            raise KeyBlockError("encrypted key data or MAC is not upper-case hex", offset=index)


# -- key check values -----------------------------------------------------------------------


def kcv_tdes(key: bytes, length: int = 3) -> str:
    """Legacy TDES KCV (X9.24-1:2017 Annex A): leftmost bytes of TDES-ECB(key, 00..00), hex."""
    if len(key) not in (8, 16, 24):
        raise KeyBlockError("TDES key must be 8, 16 or 24 bytes", field="key")
    if not 1 <= length <= 8:
        raise ValueError("KCV length must be 1 to 8 bytes")
    return _des.encrypt_tdes_ecb(bytes(key), bytes(8))[:length].hex().upper()


def kcv_aes_cmac(key: bytes, length: int = 3) -> str:
    """AES CMAC KCV (X9.24-1:2017 Annex A): leftmost bytes of AES-CMAC(key, 16 zero bytes)."""
    if len(key) not in (16, 24, 32):
        raise KeyBlockError("AES key must be 16, 24 or 32 bytes", field="key")
    if not 1 <= length <= 16:
        raise ValueError("KCV length must be 1 to 16 bytes")
    mac = cmac.CMAC(algorithms.AES(bytes(key)))
    mac.update(bytes(16))
    return mac.finalize()[:length].hex().upper()


_KCV_BY_ALGORITHM: Final[dict[str, Callable[[bytes, int], str]]] = {
    "T": kcv_tdes,
    "TDES": kcv_tdes,
    "D": kcv_tdes,
    "DES": kcv_tdes,
    "A": kcv_aes_cmac,
    "AES": kcv_aes_cmac,
}


def kcv(key: bytes, algorithm: str, length: int = 3) -> str:
    """The KCV of ``key`` for a TR-31 algorithm code (``T``/``D``/``A``) or ``TDES``/``AES``."""
    try:
        function = _KCV_BY_ALGORITHM[algorithm.upper()]
    except KeyError:
        raise ValueError(f"no KCV method for algorithm {algorithm!r}") from None
    return function(key, length)
