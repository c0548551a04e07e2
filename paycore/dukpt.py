"""DUKPT key derivation: AES (ANSI X9.24-3-2017) and TDES (ANSI X9.24-1:2009).

Both sides of Derived Unique Key Per Transaction are here, as pure functions and two small
stateful originators:

* **Host** (receiving side): :func:`aes_working_key` derives the transaction's working key
  from the initial key and the KSN the device sent, walking the transaction counter's
  one-bits from the most significant down (X9.24-3-2017 section 6.1 and 6.3: every step is
  one AES-ECB encryption of 16-byte derivation data under the previous key).
  :func:`tdes_working_key` does the same for TDES with the non-reversible key generation
  process and the variant constants of X9.24-1:2009 Annex A.
* **Originator** (device side): :class:`AesOriginator` and :class:`TdesOriginator` hand out
  the next usable transaction counter with its keys, advance before returning (so a counter
  is never used twice) and skip counters the standards exclude: more than 16 one-bits
  (AES, 32-bit counter) or more than 10 (TDES, 21-bit counter).

Derivation data (X9.24-3-2017 6.3.2, tables 2 and 3), 16 bytes per AES block::

    01 | block counter | key usage (2) | algorithm (2) | length in bits (2) | 8 KSN bytes

where the KSN bytes are the whole Initial Key ID for the initial key, and the right half of
the Initial Key ID followed by the 4-byte counter otherwise. A key longer than one block
takes block counters 01, 02.

Errors::

    ValueError                     bad arguments from the caller: unknown usage or key type,
                                   a key or Initial Key ID of the wrong length, a working key
                                   stronger than the derivation key, a bad next_counter
    paycore.errors.CodecError
    └── KsnError                   a KSN that cannot be used: wrong length, counter 0, too
                                   many one-bits (field "ksn" or "ksn transaction counter")
    paycore.errors.KeyExhausted    an originator has no counter left

A KSN arrives from outside (PIN pad, envelope), so its faults are codec errors; neither kind
of message ever contains a key or the KSN itself.

Speed: every derivation step changes the key, and with cryptography creating the cipher
objects costs more than the encryption. Each derivation therefore keeps one algorithm object
and one :class:`~cryptography.hazmat.primitives.ciphers.Cipher` for the whole walk and swaps
the algorithm's ``key`` between steps (cryptography reads it when an encryptor is created;
every key swapped in has the length of the one validated first). The known-answer tests
fail loudly if a cryptography release stops honouring that.

TDES uses ``cryptography.hazmat.decrepit`` with 24-byte keys (K1 K2 K1, and K K K for
single DES) so no deprecation warning is raised here.
"""

from __future__ import annotations

import math
import threading
from typing import Final, Literal

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from paycore.errors import CodecError, KeyExhausted

__all__ = [
    "AES_MAX_COUNTER",
    "AES_MAX_ONE_BITS",
    "TDES_MAX_COUNTER",
    "TDES_MAX_ONE_BITS",
    "AesHostKeys",
    "AesOriginator",
    "AesTransaction",
    "KeyType",
    "KsnError",
    "TdesOriginator",
    "TdesTransaction",
    "TdesUsage",
    "Usage",
    "aes_derivation_key",
    "aes_initial_key",
    "aes_update_key",
    "aes_working_key",
    "tdes_ipek",
    "tdes_transaction_key",
    "tdes_working_key",
]

Usage = Literal[
    "pin",
    "mac_gen",
    "mac_verify",
    "mac_both",
    "data_encrypt",
    "data_decrypt",
    "data_both",
    "kek",
]
"""AES DUKPT working-key usages (X9.24-3-2017 6.3.2 table 2)."""

KeyType = Literal["2TDEA", "3TDEA", "AES128", "AES192", "AES256"]
"""AES DUKPT working-key types (X9.24-3-2017 6.2.2 and 6.3.2 table 3)."""

TdesUsage = Literal["pin", "mac_request", "mac_response", "data_request", "data_response"]
"""TDES DUKPT working-key variants (X9.24-1:2009 Annex A, variant constants)."""

AES_MAX_COUNTER: Final = 0xFFFFFFFF
AES_MAX_ONE_BITS: Final = 16
TDES_MAX_COUNTER: Final = 0x1FFFFF
TDES_MAX_ONE_BITS: Final = 10

_AES_KSN_LEN: Final = 12
_AES_IKID_LEN: Final = 8
_TDES_KSN_LEN: Final = 10

# X9.24-3-2017 6.3.2 table 2: key usage indicators.
_AES_USAGE: Final[dict[str, int]] = {
    "kek": 0x0002,
    "pin": 0x1000,
    "mac_gen": 0x2000,
    "mac_verify": 0x2001,
    "mac_both": 0x2002,
    "data_encrypt": 0x3000,
    "data_decrypt": 0x3001,
    "data_both": 0x3002,
}
_AES_USAGE_KEY_DERIVATION: Final = 0x8000
_AES_USAGE_INITIAL_KEY: Final = 0x8001

# X9.24-3-2017 6.3.2 table 3: algorithm indicator, key length in bits; and a strength rank
# (6.2: a derivation key derives only working keys no stronger than itself).
_AES_KEY_TYPES: Final[dict[str, tuple[int, int, int]]] = {
    "2TDEA": (0x0000, 128, 0),
    "3TDEA": (0x0001, 192, 1),
    "AES128": (0x0002, 128, 2),
    "AES192": (0x0003, 192, 3),
    "AES256": (0x0004, 256, 4),
}
_AES_TYPE_BY_LEN: Final[dict[int, str]] = {16: "AES128", 24: "AES192", 32: "AES256"}

# ECB is what the standards specify: each derivation encrypts one or two independent blocks.
_ECB: Final = modes.ECB()  # noqa: S305


def _derivation_headers(usage: int, key_type: str) -> tuple[bytes, ...]:
    """The first 8 bytes of each derivation-data block (one per 128 bits of key)."""
    algorithm, bits, _ = _AES_KEY_TYPES[key_type]
    blocks = (bits + 127) // 128
    return tuple(
        bytes((0x01, counter))
        + usage.to_bytes(2, "big")
        + algorithm.to_bytes(2, "big")
        + bits.to_bytes(2, "big")
        for counter in range(1, blocks + 1)
    )


# Precomputed headers: (usage, key type) -> per-block 8-byte prefixes.
_WORKING_HEADERS: Final[dict[tuple[str, str], tuple[bytes, ...]]] = {
    (usage, key_type): _derivation_headers(code, key_type)
    for usage, code in _AES_USAGE.items()
    for key_type in _AES_KEY_TYPES
}
_INTERMEDIATE_HEADERS: Final[dict[int, tuple[bytes, ...]]] = {
    length: _derivation_headers(_AES_USAGE_KEY_DERIVATION, key_type)
    for length, key_type in _AES_TYPE_BY_LEN.items()
}
_INITIAL_HEADERS: Final[dict[int, tuple[bytes, ...]]] = {
    length: _derivation_headers(_AES_USAGE_INITIAL_KEY, key_type)
    for length, key_type in _AES_TYPE_BY_LEN.items()
}


class KsnError(CodecError):
    """A KSN that cannot be used: wrong length, counter 0 or too many one-bits."""


# ---------------------------------------------------------------------------------------
# Counters
# ---------------------------------------------------------------------------------------


def _next_usable(counter: int, max_ones: int) -> int:
    """The smallest counter >= ``counter`` with at most ``max_ones`` one-bits.

    Adding the lowest one-bit skips only counters that keep every higher bit set, so every
    counter skipped has at least as many one-bits as the one it started from.
    """
    while counter.bit_count() > max_ones:
        counter += counter & -counter
    return counter


def _count_usable_below(limit: int, max_ones: int) -> int:
    """How many counters in ``[0, limit)`` have at most ``max_ones`` one-bits."""
    total = 0
    ones = 0
    for bit in range(limit.bit_length() - 1, -1, -1):
        if limit >> bit & 1:
            # Counters equal to limit above this bit, 0 here, anything below.
            free = max_ones - ones
            if free >= 0:
                total += sum(math.comb(bit, k) for k in range(min(free, bit) + 1))
            ones += 1
    return total


def _keys_left(next_counter: int, max_counter: int, max_ones: int) -> int:
    if next_counter > max_counter:
        return 0
    return _count_usable_below(max_counter + 1, max_ones) - _count_usable_below(
        next_counter, max_ones
    )


def _check_next_counter(next_counter: int, max_counter: int) -> None:
    if isinstance(next_counter, bool) or not isinstance(next_counter, int):
        raise ValueError("next_counter must be an int")
    if not 1 <= next_counter <= max_counter + 1:
        raise ValueError(f"next_counter must be between 1 and {max_counter + 1:#x}")


# ---------------------------------------------------------------------------------------
# AES DUKPT (ANSI X9.24-3-2017)
# ---------------------------------------------------------------------------------------


def _check_aes_key(key: bytes, what: str) -> str:
    key_type = _AES_TYPE_BY_LEN.get(len(key))
    if key_type is None:
        raise ValueError(f"{what} must be 16, 24 or 32 bytes (AES-128, AES-192, AES-256)")
    return key_type


def _check_working_type(usage: str, key_type: str, derivation_type: str) -> None:
    if usage not in _AES_USAGE:
        raise ValueError(f"unknown AES DUKPT key usage {usage!r}; expected one of {_usages()}")
    if key_type not in _AES_KEY_TYPES:
        raise ValueError(f"unknown AES DUKPT key type {key_type!r}; expected one of {_types()}")
    if _AES_KEY_TYPES[key_type][2] > _AES_KEY_TYPES[derivation_type][2]:
        raise ValueError(
            f"a {key_type} working key cannot be derived from a {derivation_type} "
            "derivation key (X9.24-3-2017 6.2: no stronger than the derivation key)"
        )


def _usages() -> str:
    return ", ".join(_AES_USAGE)


def _types() -> str:
    return ", ".join(_AES_KEY_TYPES)


def _aes_counter(ksn: bytes) -> int:
    """The transaction counter of a 12-byte KSN, checked to be usable."""
    if len(ksn) != _AES_KSN_LEN:
        raise KsnError(f"AES DUKPT KSN must be {_AES_KSN_LEN} bytes", field="ksn")
    counter = int.from_bytes(ksn[8:12], "big")
    if counter == 0:
        raise KsnError(
            "transaction counter 0 is not a transaction",
            field="ksn transaction counter",
            offset=8,
        )
    if counter.bit_count() > AES_MAX_ONE_BITS:
        raise KsnError(
            f"transaction counter has more than {AES_MAX_ONE_BITS} one-bits",
            field="ksn transaction counter",
            offset=8,
        )
    return counter


def _aes_encrypt_blocks(key: bytes, headers: tuple[bytes, ...], tail: bytes, size: int) -> bytes:
    """X9.24-3-2017 6.3.1: AES-ECB of each derivation-data block, cut to ``size`` bytes."""
    data = b"".join(header + tail for header in headers)
    return Cipher(algorithms.AES(key), _ECB).encryptor().update(data)[:size]


def _aes_walk(key: bytes, id_right: bytes, base: int, counter: int) -> list[tuple[int, bytes]]:
    """Derivation keys for the prefixes of ``counter`` below ``base``'s, in order.

    ``key`` is the derivation key of ``base`` (the initial key for 0); ``base``'s one-bits are
    the top one-bits of ``counter``. Each further one-bit, from the most significant down, is
    added to the register and the next key is AES-ECB of the derivation data (usage 8000,
    the initial key's algorithm and length) under the previous one (X9.24-3-2017 6.1, 6.4).
    """
    size = len(key)
    headers = _INTERMEDIATE_HEADERS[size]
    algorithm = algorithms.AES(key)
    cipher = Cipher(algorithm, _ECB)
    register = base
    rest = counter ^ base
    path: list[tuple[int, bytes]] = []
    while rest:
        top = 1 << (rest.bit_length() - 1)
        rest ^= top
        register |= top
        tail = id_right + register.to_bytes(4, "big")
        if len(headers) == 1:
            data = headers[0] + tail
        else:
            data = b"".join(header + tail for header in headers)
        key = cipher.encryptor().update(data)[:size]
        algorithm.key = key  # see the module docstring: one Cipher for the whole walk
        path.append((register, key))
    return path


def _aes_derive(initial_key: bytes, id_right: bytes, counter: int) -> bytes:
    path = _aes_walk(initial_key, id_right, 0, counter)
    return path[-1][1] if path else initial_key


def _aes_working(
    derivation_key: bytes, id_right: bytes, counter: int, usage: str, key_type: str
) -> bytes:
    size = _AES_KEY_TYPES[key_type][1] // 8
    tail = id_right + counter.to_bytes(4, "big")
    return _aes_encrypt_blocks(derivation_key, _WORKING_HEADERS[usage, key_type], tail, size)


def aes_initial_key(bdk: bytes, initial_key_id: bytes) -> bytes:
    """The initial key for ``initial_key_id`` under an AES BDK (X9.24-3-2017 6.3.3).

    Derivation data: usage 8001 (initial key), the BDK's algorithm and length, and the whole
    8-byte Initial Key ID. The initial key has the BDK's type and length.

    >>> aes_initial_key(bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1"),
    ...                 bytes.fromhex("1234567890123456")).hex().upper()
    '1273671EA26AC29AFA4D1084127652A1'
    """
    _check_aes_key(bdk, "BDK")
    if len(initial_key_id) != _AES_IKID_LEN:
        raise ValueError(f"Initial Key ID must be {_AES_IKID_LEN} bytes")
    return _aes_encrypt_blocks(bdk, _INITIAL_HEADERS[len(bdk)], bytes(initial_key_id), len(bdk))


def aes_derivation_key(initial_key: bytes, ksn: bytes) -> bytes:
    """The derivation ("transaction") key for a 12-byte KSN (X9.24-3-2017 6.1, 6.4).

    >>> aes_derivation_key(bytes.fromhex("1273671EA26AC29AFA4D1084127652A1"),
    ...                    bytes.fromhex("123456789012345600000001")).hex().upper()
    '4F21B565BAD9835E112B6465635EAE44'
    """
    _check_aes_key(initial_key, "initial key")
    counter = _aes_counter(ksn)
    return _aes_derive(bytes(initial_key), bytes(ksn[4:8]), counter)


def aes_working_key(initial_key: bytes, ksn: bytes, usage: str, key_type: str) -> bytes:
    """The working key of ``usage`` and ``key_type`` for a KSN: the host side.

    Derives the transaction's derivation key from the initial key by walking the counter's
    one-bits, then the working key: derivation data with the usage (X9.24-3-2017 6.3.2
    table 2), the working key's algorithm and length, the right half of the Initial Key ID
    and the counter. ``usage`` is one of :data:`Usage`, ``key_type`` one of :data:`KeyType`.

    Raises :class:`ValueError` for a bad usage, key type, key length or a working key
    stronger than the derivation key, :class:`KsnError` for an unusable KSN.

    >>> aes_working_key(bytes.fromhex("1273671EA26AC29AFA4D1084127652A1"),
    ...                 bytes.fromhex("123456789012345600000001"), "pin", "AES128").hex().upper()
    'AF8CB133A78F8DC2D1359F18527593FB'
    """
    derivation_type = _check_aes_key(initial_key, "initial key")
    _check_working_type(usage, key_type, derivation_type)
    counter = _aes_counter(ksn)
    id_right = bytes(ksn[4:8])
    derivation_key = _aes_derive(bytes(initial_key), id_right, counter)
    return _aes_working(derivation_key, id_right, counter, usage, key_type)


def aes_update_key(initial_key: bytes, initial_key_id: bytes, key_type: str) -> bytes:
    """The key-update key of an initial key (X9.24-3-2017 supplement, "update key").

    It is the key-encryption-key (usage 0002) working key of ``key_type`` for counter
    FFFFFFFF, whose derivation key is reached by walking all 32 counter bits: no
    transaction can use that counter (it has more than 16 one-bits), so the key is
    independent of every transaction key.
    """
    derivation_type = _check_aes_key(initial_key, "initial key")
    _check_working_type("kek", key_type, derivation_type)
    if len(initial_key_id) != _AES_IKID_LEN:
        raise ValueError(f"Initial Key ID must be {_AES_IKID_LEN} bytes")
    id_right = bytes(initial_key_id[4:8])
    derivation_key = _aes_derive(bytes(initial_key), id_right, AES_MAX_COUNTER)
    return _aes_working(derivation_key, id_right, AES_MAX_COUNTER, "kek", key_type)


class _AesPath:
    """The derivation keys along the last counter's path from one initial key.

    Consecutive counters share most of their path (their high one-bits), so keeping it
    turns a derivation of up to 16 AES operations into one or two. Not thread-safe: the
    owners below hold a lock around it.
    """

    __slots__ = ("_id_right", "_initial_key", "_path")

    def __init__(self, initial_key: bytes, initial_key_id: bytes) -> None:
        _check_aes_key(initial_key, "initial key")
        if len(initial_key_id) != _AES_IKID_LEN:
            raise ValueError(f"Initial Key ID must be {_AES_IKID_LEN} bytes")
        self._initial_key = bytes(initial_key)
        self._id_right = bytes(initial_key_id[4:8])
        self._path: list[tuple[int, bytes]] = []

    @property
    def derivation_type(self) -> str:
        return _AES_TYPE_BY_LEN[len(self._initial_key)]

    def derivation_key(self, counter: int) -> bytes:
        # Reuse the longest run of cached prefixes that are also prefixes of counter.
        keep = 0
        for register, _ in self._path:
            if _top_bits(counter, register) != register:
                break
            keep += 1
        path = self._path[:keep]
        base, key = path[-1] if path else (0, self._initial_key)
        path.extend(_aes_walk(key, self._id_right, base, counter))
        self._path = path
        return path[-1][1] if path else self._initial_key


class AesHostKeys:
    """The host side for one device's initial key: working keys for the KSNs it sends.

    Gives the same keys as :func:`aes_working_key`, but keeps the derivation path of the
    last KSN (as the originator does), so a device's next KSN usually costs two AES
    operations instead of up to seventeen. A key store holds one per active device; it
    holds key material, so it lives only as long as the store's own keys do. Safe to share
    between threads.
    """

    __slots__ = ("_id", "_lock", "_path")

    def __init__(self, initial_key: bytes, initial_key_id: bytes) -> None:
        self._path = _AesPath(initial_key, initial_key_id)
        self._id = bytes(initial_key_id)
        self._lock = threading.Lock()

    def working_key(self, ksn: bytes, usage: str, key_type: str) -> bytes:
        """The working key for ``ksn`` (which must carry this device's Initial Key ID)."""
        _check_working_type(usage, key_type, self._path.derivation_type)
        counter = _aes_counter(ksn)
        if bytes(ksn[:_AES_IKID_LEN]) != self._id:
            raise KsnError("KSN belongs to another initial key", field="ksn", offset=0)
        with self._lock:
            derivation_key = self._path.derivation_key(counter)
        return _aes_working(derivation_key, self._id[4:8], counter, usage, key_type)

    def __repr__(self) -> str:
        return f"AesHostKeys(initial_key_id={self._id.hex().upper()})"


class AesTransaction:
    """One originator transaction: its KSN and counter, and its working keys on demand."""

    __slots__ = ("_derivation_key", "_derivation_type", "_id_right", "counter", "ksn")

    def __init__(self, ksn: bytes, counter: int, derivation_key: bytes) -> None:
        self.ksn = ksn
        self.counter = counter
        self._id_right = ksn[4:8]
        self._derivation_key = derivation_key
        self._derivation_type = _AES_TYPE_BY_LEN[len(derivation_key)]

    def working_key(self, usage: str, key_type: str) -> bytes:
        """The working key of ``usage`` and ``key_type`` (see :func:`aes_working_key`)."""
        _check_working_type(usage, key_type, self._derivation_type)
        return _aes_working(self._derivation_key, self._id_right, self.counter, usage, key_type)

    def __repr__(self) -> str:
        return f"AesTransaction(ksn={self.ksn.hex().upper()}, counter={self.counter})"


class AesOriginator:
    """The device side of AES DUKPT: hands out each usable counter once, with its keys.

    ``next_counter`` is where to resume (persisted by the caller: read :attr:`next_counter`
    after :meth:`next_transaction` and store it before using the keys). Counters with more
    than 16 one-bits are skipped (X9.24-3-2017 6.1); after the last usable counter
    (FFFF0000) :meth:`next_transaction` raises :class:`~paycore.errors.KeyExhausted`.

    Keys are derived from the initial key (which a software terminal keeps at rest anyway);
    the derivation keys along the last counter's path are kept so that the next counter,
    which shares most of that path, costs one or two AES operations. Safe to share between
    threads: a lock makes each counter go to exactly one caller.
    """

    __slots__ = ("_id", "_lock", "_next", "_path")

    def __init__(self, initial_key: bytes, initial_key_id: bytes, *, next_counter: int = 1) -> None:
        _check_next_counter(next_counter, AES_MAX_COUNTER)
        self._path = _AesPath(initial_key, initial_key_id)
        self._id = bytes(initial_key_id)
        self._next = _next_usable(next_counter, AES_MAX_ONE_BITS)
        self._lock = threading.Lock()

    @property
    def next_counter(self) -> int:
        """The counter the next transaction will use (2**32 once exhausted)."""
        return self._next

    @property
    def keys_left(self) -> int:
        """How many transactions this originator can still give."""
        return _keys_left(self._next, AES_MAX_COUNTER, AES_MAX_ONE_BITS)

    def next_transaction(self) -> AesTransaction:
        """The next usable counter's KSN and keys; the originator advances first."""
        with self._lock:
            counter = self._next
            if counter > AES_MAX_COUNTER:
                raise KeyExhausted(
                    "AES DUKPT originator has used its last transaction counter; "
                    "load a new initial key"
                )
            self._next = _next_usable(counter + 1, AES_MAX_ONE_BITS)
            derivation_key = self._path.derivation_key(counter)
        return AesTransaction(self._id + counter.to_bytes(4, "big"), counter, derivation_key)

    def __repr__(self) -> str:
        return (
            f"AesOriginator(initial_key_id={self._id.hex().upper()}, "
            f"next_counter={self._next:#x}, keys_left={self.keys_left})"
        )


def _top_bits(counter: int, register: int) -> int:
    """``counter`` cut to the bits at and above ``register``'s lowest one-bit."""
    low = register & -register
    return counter & ~(low - 1)


# ---------------------------------------------------------------------------------------
# TDES DUKPT (ANSI X9.24-1:2009)
# ---------------------------------------------------------------------------------------

_C0_MASK: Final = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")
_TDES_COUNTER_MASK: Final = TDES_MAX_COUNTER
# X9.24-1:2009 Annex A: variant constants XORed into the transaction key.
_TDES_VARIANTS: Final[dict[str, bytes]] = {
    "pin": bytes.fromhex("00000000000000FF00000000000000FF"),
    "mac_request": bytes.fromhex("000000000000FF00000000000000FF00"),
    "mac_response": bytes.fromhex("00000000FF00000000000000FF000000"),
    "data_request": bytes.fromhex("0000000000FF00000000000000FF0000"),
    "data_response": bytes.fromhex("000000FF00000000000000FF00000000"),
}
_TDES_DATA_USAGES: Final = frozenset({"data_request", "data_response"})


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _tdes_ecb(key16: bytes, data: bytes) -> bytes:
    """Two-key TDES-ECB, with the key given to cryptography as K1 K2 K1."""
    return Cipher(TripleDES(key16 + key16[:8]), _ECB).encryptor().update(data)


def _check_tdes_key(key: bytes, what: str) -> None:
    if len(key) != 16:
        raise ValueError(f"{what} must be 16 bytes (two-key TDES)")


def _tdes_counter(ksn: bytes) -> int:
    if len(ksn) != _TDES_KSN_LEN:
        raise KsnError(f"TDES DUKPT KSN must be {_TDES_KSN_LEN} bytes", field="ksn")
    counter = int.from_bytes(ksn[7:10], "big") & _TDES_COUNTER_MASK
    if counter == 0:
        raise KsnError(
            "transaction counter 0 is not a transaction",
            field="ksn transaction counter",
            offset=7,
        )
    if counter.bit_count() > TDES_MAX_ONE_BITS:
        raise KsnError(
            f"transaction counter has more than {TDES_MAX_ONE_BITS} one-bits",
            field="ksn transaction counter",
            offset=7,
        )
    return counter


def tdes_ipek(bdk: bytes, ksn: bytes) -> bytes:
    """The initial PIN encryption key (IPEK) for a KSN (X9.24-1:2009 A.6).

    Left half: TDES-ECB under the BDK of the KSN's leftmost 8 bytes with the 21 counter
    bits cleared; right half: the same under BDK XOR C0C0C0C000000000C0C0C0C000000000.

    >>> tdes_ipek(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"),
    ...           bytes.fromhex("FFFF9876543210E00000")).hex().upper()
    '6AC292FAA1315B4D858AB3A3D7D5933A'
    """
    _check_tdes_key(bdk, "BDK")
    if len(ksn) != _TDES_KSN_LEN:
        raise KsnError(f"TDES DUKPT KSN must be {_TDES_KSN_LEN} bytes", field="ksn")
    base = (int.from_bytes(ksn, "big") & ~_TDES_COUNTER_MASK).to_bytes(10, "big")[:8]
    bdk = bytes(bdk)
    return _tdes_ecb(bdk, base) + _tdes_ecb(_xor(bdk, _C0_MASK), base)


def _tdes_walk(key: bytes, register_base: int, base: int, counter: int) -> list[tuple[int, bytes]]:
    """Future keys for the prefixes of ``counter`` beyond ``base`` (X9.24-1:2009 A.2).

    Each step is the non-reversible key generation process on the 8-byte KSN register
    (``register_base`` with the counter prefix in its low 21 bits): right half
    DES(KL, R xor KR) xor KR, left half the same under key XOR C0C0C0C0 00000000 (both
    halves). Single DES runs as TDES with the key K K K.
    """
    left_alg = TripleDES(key[:8] * 3)
    left = Cipher(left_alg, _ECB)
    register = base
    rest = counter ^ base
    path: list[tuple[int, bytes]] = []
    while rest:
        top = 1 << (rest.bit_length() - 1)
        rest ^= top
        register |= top
        r = register_base | register
        k = int.from_bytes(key, "big")
        kr = k & 0xFFFFFFFFFFFFFFFF
        kv = k ^ 0xC0C0C0C000000000C0C0C0C000000000
        kvr = kv & 0xFFFFFFFFFFFFFFFF
        left_alg.key = key[:8] * 3  # see the module docstring
        out_r = int.from_bytes(left.encryptor().update((r ^ kr).to_bytes(8, "big")), "big")
        left_alg.key = (kv >> 64).to_bytes(8, "big") * 3
        out_l = int.from_bytes(left.encryptor().update((r ^ kvr).to_bytes(8, "big")), "big")
        key = ((out_l ^ kvr) << 64 | (out_r ^ kr)).to_bytes(16, "big")
        path.append((register, key))
    return path


def _check_tdes_usage(usage: str) -> bytes:
    variant = _TDES_VARIANTS.get(usage)
    if variant is None:
        raise ValueError(
            f"unknown TDES DUKPT key usage {usage!r}; expected one of {', '.join(_TDES_VARIANTS)}"
        )
    return variant


def _tdes_variant(transaction_key: bytes, usage: str) -> bytes:
    key = _xor(transaction_key, _check_tdes_usage(usage))
    if usage in _TDES_DATA_USAGES:
        # X9.24-1:2009 A.4 one-way step: TDES-ECB(K', K'left) || TDES-ECB(K', K'right).
        key = _tdes_ecb(key, key)
    return key


def _tdes_register_base(ksn: bytes) -> int:
    return int.from_bytes(ksn[2:10], "big") & ~_TDES_COUNTER_MASK


def tdes_transaction_key(ipek: bytes, ksn: bytes) -> bytes:
    """The transaction ("future") key for a KSN, before any variant (X9.24-1:2009 A.4).

    >>> tdes_transaction_key(bytes.fromhex("6AC292FAA1315B4D858AB3A3D7D5933A"),
    ...                      bytes.fromhex("FFFF9876543210E00001")).hex().upper()
    '042666B49184CFA368DE9628D0397BC9'
    """
    _check_tdes_key(ipek, "IPEK")
    counter = _tdes_counter(ksn)
    return _tdes_walk(bytes(ipek), _tdes_register_base(ksn), 0, counter)[-1][1]


def tdes_working_key(ipek: bytes, ksn: bytes, usage: str) -> bytes:
    """The working key of ``usage`` (one of :data:`TdesUsage`) for a KSN: the host side.

    The transaction key XOR the usage's variant constant; the data keys also go through
    the one-way step TDES-ECB(K', K'left) || TDES-ECB(K', K'right).
    """
    _check_tdes_key(ipek, "IPEK")
    _check_tdes_usage(usage)
    return _tdes_variant(tdes_transaction_key(ipek, ksn), usage)


class TdesTransaction:
    """One TDES originator transaction: its KSN and counter, working keys on demand."""

    __slots__ = ("_transaction_key", "counter", "ksn")

    def __init__(self, ksn: bytes, counter: int, transaction_key: bytes) -> None:
        self.ksn = ksn
        self.counter = counter
        self._transaction_key = transaction_key

    def working_key(self, usage: str) -> bytes:
        """The working key of ``usage`` (see :func:`tdes_working_key`)."""
        return _tdes_variant(self._transaction_key, usage)

    def __repr__(self) -> str:
        return f"TdesTransaction(ksn={self.ksn.hex().upper()}, counter={self.counter})"


class TdesOriginator:
    """The device side of TDES DUKPT (X9.24-1:2009): each usable counter once, with keys.

    ``initial_ksn`` is the 10-byte KSN with a zero counter (a non-zero counter is refused,
    so a current KSN is not mistaken for the initial one); ``next_counter`` is where to
    resume. The 21-bit counter takes only values with at most 10 one-bits: 1,048,575
    transactions in all, then :class:`~paycore.errors.KeyExhausted`.
    """

    __slots__ = ("_initial_ksn", "_ipek", "_lock", "_next", "_path", "_register_base")

    def __init__(self, ipek: bytes, initial_ksn: bytes, *, next_counter: int = 1) -> None:
        _check_tdes_key(ipek, "IPEK")
        if len(initial_ksn) != _TDES_KSN_LEN:
            raise ValueError(f"initial KSN must be {_TDES_KSN_LEN} bytes")
        if int.from_bytes(initial_ksn[7:10], "big") & _TDES_COUNTER_MASK:
            raise ValueError("initial KSN must have a zero counter; pass next_counter instead")
        _check_next_counter(next_counter, TDES_MAX_COUNTER)
        self._ipek = bytes(ipek)
        self._initial_ksn = bytes(initial_ksn)
        self._register_base = _tdes_register_base(self._initial_ksn)
        self._next = _next_usable(next_counter, TDES_MAX_ONE_BITS)
        self._path: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()

    @property
    def next_counter(self) -> int:
        """The counter the next transaction will use (2**21 once exhausted)."""
        return self._next

    @property
    def keys_left(self) -> int:
        """How many transactions this originator can still give."""
        return _keys_left(self._next, TDES_MAX_COUNTER, TDES_MAX_ONE_BITS)

    def next_transaction(self) -> TdesTransaction:
        """The next usable counter's KSN and keys; the originator advances first."""
        with self._lock:
            counter = self._next
            if counter > TDES_MAX_COUNTER:
                raise KeyExhausted(
                    "TDES DUKPT originator has used its last transaction counter; load a new IPEK"
                )
            self._next = _next_usable(counter + 1, TDES_MAX_ONE_BITS)
            keep = 0
            for register, _ in self._path:
                if _top_bits(counter, register) != register:
                    break
                keep += 1
            path = self._path[:keep]
            base, key = path[-1] if path else (0, self._ipek)
            path.extend(_tdes_walk(key, self._register_base, base, counter))
            self._path = path
        ksn = (int.from_bytes(self._initial_ksn, "big") | counter).to_bytes(10, "big")
        return TdesTransaction(ksn, counter, path[-1][1])

    def __repr__(self) -> str:
        return (
            f"TdesOriginator(initial_ksn={self._initial_ksn.hex().upper()}, "
            f"next_counter={self._next:#x}, keys_left={self.keys_left})"
        )
