"""The software key store: keys encrypted at rest in a JSON file (DESIGN section 5).

Each key (data and PIN BDKs, KBPKs, zone PIN keys) is stored AES-GCM-encrypted (NIST SP
800-38D) under a key-encryption key (KEK) that the caller passes in as bytes; the
associated data binds the key's id, algorithm, purpose, role, KCV and creation time, so no
entry can be renamed or repurposed in the file. A KEK check value (an AES-GCM tag over an
empty message) makes a wrong KEK fail even on an empty store. The file and the KEK file
must be mode 0600 or stricter; writes go to a temporary file that is fsynced and renamed
over the old one, then the directory is fsynced.

What this store implements, and where:

* envelope keys: AES DUKPT (ANSI X9.24-3-2017) through :class:`paycore.dukpt.AesHostKeys`,
  one per terminal initial key, in a bounded LRU cache (consecutive KSNs of a terminal
  cost two AES operations); the working key as :func:`paycore.wire.working_key` derives it;
* PIN blocks: ISO 9564-1 format 4 under the AES DUKPT PIN key, format 0 under the TDES
  DUKPT (X9.24-1:2009) PIN key for legacy pads; translation to a zone PIN key (format 0
  TDES or format 4 AES);
* TR-31 / X9.143 import and export (version D, usage B1 for device initial keys) through
  :mod:`paycore.tr31`, the export under a stored KBPK or under one given by value (the
  key enrolment agrees by ECDH, used once and not kept); key components (XOR of 2 or 3,
  each with its KCV).

Key roles. A ``purpose="pin"`` key is a PIN BDK when created, imported from components or
from a TR-31 block with usage B0; it is a zone PIN key (used to encipher PIN blocks for an
acquirer) only when imported from a TR-31 block with usage P0. The two are never
interchangeable; :mod:`gateway_bridge.keystore.pkcs11` enforces the same rule with
PKCS#11 key attributes.

The helpers at the top of this module (file modes, key ids, components, TR-31 purpose
checks, the LRU cache) are shared with the PKCS#11 store so the two behave alike.

Residual exposure of the clear PIN (docs/key-store.md): :mod:`paycore.pinblock` returns the
PIN as ``str`` and takes it as ``str``; Python cannot wipe a ``str``, so that object lives
until the garbage collector frees it. Only the bytearray handed to ``check`` is zeroed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Generic, Literal, TypeVar, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway_bridge.keystore.base import (
    KeyAlgorithm,
    KeyBlockRefused,
    KeyInfo,
    KeyPurpose,
    KeyStoreError,
    KeyStoreLocked,
    UnknownKey,
)
from paycore import pinblock, tr31
from paycore.dukpt import AesHostKeys, aes_initial_key, tdes_ipek
from paycore.errors import EnvelopeError
from paycore.wire import EncryptedPinBlock, EnvelopeHeader, working_key

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "KeyRole",
    "LruCache",
    "SoftwareKeyStore",
    "check_kbpk_value",
    "check_key_id",
    "check_private_file",
    "combine_components",
    "initial_key_header",
    "kcv_of",
    "read_kek_file",
    "read_secret_text",
    "role_for_tr31",
]

Clock = Callable[[], datetime]
RandomSource = Callable[[int], bytes]
KeyRole = Literal["bdk", "zpk", "kbpk"]
"""``bdk``: a data or PIN BDK; ``zpk``: a zone PIN key; ``kbpk``: a key-block protection key."""

DEFAULT_CACHE_SIZE: Final = 10_000
KEY_LENGTHS: Final[dict[str, int]] = {"AES128": 16, "AES192": 24, "AES256": 32, "TDES2": 16}
_ALGORITHMS: Final = frozenset(get_args(KeyAlgorithm))
_PURPOSES: Final = frozenset(get_args(KeyPurpose))
_KEY_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FORMAT: Final = "gateway-bridge-keystore"
_KEK_CHECK_AAD: Final = b"gateway-bridge keystore KEK check v1"
_NONCE: Final = 12
_ECB: Final = modes.ECB()  # noqa: S305 - ISO 9564 format 0 enciphers one block


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- shared policy -------------------------------------------------------------------------


def check_private_file(path: Path) -> None:
    """Refuse a secret file that group or others may read or write (KeyStoreLocked)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyStoreLocked(f"cannot open {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise KeyStoreLocked(f"{path} is not a regular file")
    if mode & 0o077:
        raise KeyStoreLocked(
            f"{path} has mode {stat.S_IMODE(mode):04o}; it must be 0600 or stricter: "
            f"run `chmod 600 {path}`"
        )


def read_secret_text(path: Path) -> str:
    """The stripped text of a mode-0600 secret file (a KEK in hex, a token PIN)."""
    check_private_file(path)
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise KeyStoreLocked(f"cannot read {path} as ASCII text") from None


def read_kek_file(path: Path) -> bytes:
    """A KEK from a mode-0600 file holding it in hex (32, 48 or 64 hex digits)."""
    text = read_secret_text(path)
    try:
        kek = bytes.fromhex(text)
    except ValueError:
        raise KeyStoreLocked(f"{path} does not hold a KEK in hex") from None
    if len(kek) not in (16, 24, 32):
        raise KeyStoreLocked(f"{path} does not hold a 128, 192 or 256-bit KEK")
    return kek


def check_key_id(key_id: str) -> None:
    """Key ids are 1-64 characters: letters, digits, ``.``, ``_``, ``-``."""
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise KeyStoreError(
            "key id must be 1 to 64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )


def check_algorithm_purpose(algorithm: str, purpose: str) -> None:
    if algorithm not in _ALGORITHMS:
        raise KeyStoreError(f"unknown key algorithm {algorithm!r}")
    if purpose not in _PURPOSES:
        raise KeyStoreError(f"unknown key purpose {purpose!r}")
    if purpose == "data" and algorithm == "TDES2":
        raise KeyStoreError("data BDKs are AES: envelopes use AES DUKPT (X9.24-3)")


def kcv_of(key: bytes, algorithm: str) -> str:
    """The KCV shown for a key: AES-CMAC KCV for AES, the legacy TDES KCV for TDES2."""
    return tr31.kcv(bytes(key), "TDES" if algorithm == "TDES2" else "AES")


def _tdes_parity(key: bytes) -> bytes:
    """Set each byte's low bit for odd parity (the DES key convention)."""
    return bytes(b & 0xFE | (bin(b >> 1).count("1") + 1) % 2 for b in key)


def combine_components(algorithm: str, components: list[tuple[bytes, str]]) -> bytearray:
    """The XOR of 2 or 3 key components, each checked against its KCV (KeyBlockRefused)."""
    length = KEY_LENGTHS.get(algorithm)
    if length is None:
        raise KeyBlockRefused(f"unknown key algorithm {algorithm!r}")
    if len(components) not in (2, 3):
        raise KeyBlockRefused("a key is imported from 2 or 3 components")
    combined = bytearray(length)
    for number, (component, expected) in enumerate(components, start=1):
        if len(component) != length:
            raise KeyBlockRefused(f"component {number} is not {length} bytes for {algorithm}")
        actual = kcv_of(component, algorithm)
        if not hmac.compare_digest(actual, expected.strip().upper()):
            raise KeyBlockRefused(f"component {number} does not match its KCV")
        for index, byte in enumerate(component):
            combined[index] ^= byte
    if not any(combined):
        raise KeyBlockRefused("the components cancel out to an all-zero key")
    return combined


# TR-31 key usage -> (purpose, role, allowed modes of use)
_TR31_USAGES: Final[dict[str, tuple[tuple[str, ...], KeyRole, frozenset[str]]]] = {
    "B0": (("data", "pin"), "bdk", frozenset("XN")),
    "P0": (("pin",), "zpk", frozenset("BEN")),
    "K0": (("kbpk",), "kbpk", frozenset("BDEN")),
    "K1": (("kbpk",), "kbpk", frozenset("BDEN")),
}


def role_for_tr31(header: tr31.KeyBlockHeader, key: bytes, purpose: str) -> tuple[str, KeyRole]:
    """(algorithm, role) of a key unwrapped from a TR-31 block, if it suits ``purpose``."""
    allowed = _TR31_USAGES.get(header.key_usage)
    if allowed is None or purpose not in allowed[0]:
        raise KeyBlockRefused(
            f"TR-31 key usage {header.key_usage} cannot be imported as a {purpose} key"
        )
    purposes, role, modes_of_use = allowed
    del purposes
    if header.mode_of_use not in modes_of_use:
        raise KeyBlockRefused(
            f"TR-31 mode of use {header.mode_of_use} does not suit key usage {header.key_usage}"
        )
    if header.algorithm == "A" and len(key) in (16, 24, 32):
        algorithm = {16: "AES128", 24: "AES192", 32: "AES256"}[len(key)]
    elif header.algorithm == "T" and len(key) == 16:
        algorithm = "TDES2"
    else:
        raise KeyBlockRefused("TR-31 algorithm and key length are not AES or two-key TDES")
    try:
        check_algorithm_purpose(algorithm, purpose)
    except KeyStoreError as exc:
        raise KeyBlockRefused(str(exc)) from None
    return algorithm, role


def initial_key_header(initial_key_id: bytes, kcv: str) -> tr31.KeyBlockHeader:
    """The TR-31 header of an exported AES DUKPT initial key (X9.143 usage B1, mode X).

    Optional blocks: ``IK`` (the 8-byte Initial Key ID, X9.143 6.3.6) and ``KC`` (the key
    check value, algorithm ``01`` = CMAC KCV).
    """
    return tr31.KeyBlockHeader(
        version_id="D",
        key_usage="B1",
        algorithm="A",
        mode_of_use="X",
        version_num="00",
        exportability="N",
        optional_blocks=(("IK", initial_key_id.hex().upper()), ("KC", "01" + kcv)),
    )


def check_kbpk_value(kbpk: bytes) -> bytes:
    """A KBPK given by value: 16, 24 or 32 bytes of AES key (KeyStoreError otherwise).

    The message names the length only, never the value.
    """
    if not isinstance(kbpk, bytes | bytearray) or len(kbpk) not in (16, 24, 32):
        raise KeyStoreError("a KBPK given by value must be a 16, 24 or 32-byte AES key")
    return bytes(kbpk)


def check_initial_key_id(initial_key_id: bytes) -> bytes:
    if not isinstance(initial_key_id, bytes | bytearray) or len(initial_key_id) != 8:
        raise KeyStoreError("an AES DUKPT Initial Key ID is 8 bytes")
    return bytes(initial_key_id)


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class LruCache(Generic[_K, _V]):
    """A bounded least-recently-used map; ``on_evict`` is called for each value dropped."""

    def __init__(self, size: int, on_evict: Callable[[_V], None] | None = None) -> None:
        if size < 1:
            raise ValueError("cache size must be at least 1")
        self._size = size
        self._items: OrderedDict[_K, _V] = OrderedDict()
        self._on_evict = on_evict
        self._lock = threading.RLock()

    def get_or_create(self, key: _K, create: Callable[[], _V]) -> _V:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
                return value
            value = create()
            self._items[key] = value
            while len(self._items) > self._size:
                _, old = self._items.popitem(last=False)
                if self._on_evict is not None:
                    self._on_evict(old)
            return value

    def clear(self) -> None:
        with self._lock:
            while self._items:
                _, old = self._items.popitem()
                if self._on_evict is not None:
                    self._on_evict(old)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"LruCache(size={self._size}, entries={len(self._items)})"


def run_check(pin: str, check: Callable[[bytearray], bool]) -> bool:
    """Give the PIN to ``check`` as ASCII digits in a bytearray; zero it afterwards."""
    clear = bytearray(pin.encode("ascii"))
    try:
        return bool(check(clear))
    finally:
        clear[:] = bytes(len(clear))


def zone_encipher_format0(zone_key: bytes, pin: str, pan: str) -> bytes:
    """ISO 9564-1 format 0 block TDES-ECB enciphered under a two-key TDES zone key."""
    clear = pinblock.encode_format0(pin, pan)
    key = bytes(zone_key)
    return Cipher(TripleDES(key + key[:8]), _ECB).encryptor().update(clear)


def pin_block_bytes(pin_block: EncryptedPinBlock) -> tuple[bytes, bytes]:
    """(KSN, enciphered block) of a PIN block from the wire."""
    return bytes.fromhex(pin_block.ksn), bytes.fromhex(pin_block.block.get_secret_value())


# -- the store -----------------------------------------------------------------------------


class _Entry:
    __slots__ = ("info", "key", "role")

    def __init__(self, info: KeyInfo, role: KeyRole, key: bytes) -> None:
        self.info = info
        self.role = role
        self.key = key

    def __repr__(self) -> str:
        return f"_Entry({self.info.key_id!r}, {self.info.algorithm}, KCV {self.info.kcv})"


def _aad(info: KeyInfo, role: KeyRole) -> bytes:
    fields = [
        _FORMAT,
        info.key_id,
        info.algorithm,
        info.purpose,
        role,
        info.kcv,
        info.created_at.isoformat(),
    ]
    return json.dumps(fields, separators=(",", ":")).encode()


class SoftwareKeyStore:
    """Keys encrypted at rest under a KEK in a JSON file; see the module docstring.

    ``kek`` is 16, 24 or 32 bytes. A missing file is an error unless ``create`` is true
    (then the first key written creates it, mode 0600). ``cache_size`` bounds the number of
    terminals whose DUKPT derivation path is kept. Safe to share between threads.
    """

    def __init__(
        self,
        path: Path | str,
        kek: bytes,
        *,
        create: bool = False,
        cache_size: int = DEFAULT_CACHE_SIZE,
        random: RandomSource = secrets.token_bytes,
        clock: Clock = _utcnow,
    ) -> None:
        if not isinstance(kek, bytes | bytearray) or len(kek) not in (16, 24, 32):
            raise KeyStoreLocked("the KEK must be 16, 24 or 32 bytes")
        self._path = Path(path)
        self._kek = AESGCM(bytes(kek))
        self._random = random
        self._clock = clock
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._hosts: LruCache[tuple[str, bytes], AesHostKeys] = LruCache(cache_size)
        self._kek_check = ""
        if self._path.exists():
            self._load()
        elif not create:
            raise KeyStoreLocked(f"no key store at {self._path}")
        else:
            nonce = self._random(_NONCE)
            tag = self._kek.encrypt(nonce, b"", _KEK_CHECK_AAD)
            self._kek_check = base64.b64encode(nonce + tag).decode()

    def __repr__(self) -> str:
        return f"SoftwareKeyStore(path={str(self._path)!r}, keys={len(self._entries)})"

    # -- file ----------------------------------------------------------------------------

    def _load(self) -> None:
        check_private_file(self._path)
        try:
            document = json.loads(self._path.read_bytes())
            if document.get("format") != _FORMAT or document.get("version") != 1:
                raise KeyStoreLocked(f"{self._path} is not a version 1 gateway-bridge key store")
            check = base64.b64decode(document["kek_check"], validate=True)
            records = document["keys"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise KeyStoreLocked(f"{self._path} is not a readable key store") from None
        try:
            self._kek.decrypt(check[:_NONCE], check[_NONCE:], _KEK_CHECK_AAD)
        except (InvalidTag, ValueError):
            raise KeyStoreLocked(f"wrong KEK for {self._path}") from None
        self._kek_check = document["kek_check"]
        for record in records:
            entry = self._unseal(record)
            self._entries[entry.info.key_id] = entry

    def _unseal(self, record: dict[str, str]) -> _Entry:
        try:
            info = KeyInfo(
                key_id=record["key_id"],
                algorithm=record["algorithm"],  # type: ignore[arg-type]
                purpose=record["purpose"],  # type: ignore[arg-type]
                kcv=record["kcv"],
                created_at=datetime.fromisoformat(record["created_at"]),
            )
            role: KeyRole = record["role"]  # type: ignore[assignment]
            sealed = base64.b64decode(record["sealed"], validate=True)
            key = self._kek.decrypt(sealed[:_NONCE], sealed[_NONCE:], _aad(info, role))
        except (KeyError, TypeError, ValueError, binascii.Error, InvalidTag):
            raise KeyStoreLocked(
                f"{self._path} has an entry that does not decrypt under this KEK "
                "(damaged or edited file)"
            ) from None
        return _Entry(info, role, key)

    def _seal(self, entry: _Entry) -> dict[str, str]:
        nonce = self._random(_NONCE)
        sealed = nonce + self._kek.encrypt(nonce, entry.key, _aad(entry.info, entry.role))
        info = entry.info
        return {
            "key_id": info.key_id,
            "algorithm": info.algorithm,
            "purpose": info.purpose,
            "role": entry.role,
            "kcv": info.kcv,
            "created_at": info.created_at.isoformat(),
            "sealed": base64.b64encode(sealed).decode(),
        }

    def _save(self, entries: dict[str, _Entry]) -> None:
        document = {
            "format": _FORMAT,
            "version": 1,
            "kek_check": self._kek_check,
            "keys": [self._seal(entries[key_id]) for key_id in sorted(entries)],
        }
        data = json.dumps(document, indent=1).encode() + b"\n"
        directory = self._path.parent
        fd, temp = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self._path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _add(self, key_id: str, algorithm: str, purpose: str, role: KeyRole, key: bytes) -> KeyInfo:
        check_key_id(key_id)
        check_algorithm_purpose(algorithm, purpose)
        if len(key) != KEY_LENGTHS[algorithm]:
            raise KeyStoreError(f"key {key_id} has the wrong length for {algorithm}")
        info = KeyInfo(
            key_id=key_id,
            algorithm=algorithm,  # type: ignore[arg-type]
            purpose=purpose,  # type: ignore[arg-type]
            kcv=kcv_of(key, algorithm),
            created_at=self._clock(),
        )
        with self._lock:
            if key_id in self._entries:
                raise KeyStoreError(f"key {key_id} already exists")
            entries = dict(self._entries)
            entries[key_id] = _Entry(info, role, bytes(key))
            self._save(entries)
            self._entries = entries
        return info

    def _get(self, key_id: str, purpose: str, role: KeyRole) -> _Entry:
        entry = self._entries.get(key_id)
        if entry is None:
            raise UnknownKey(f"no key {key_id!r} in the store")
        if entry.info.purpose != purpose or entry.role != role:
            raise KeyStoreError(
                f"key {key_id} is a {entry.info.purpose} {entry.role}, not a {purpose} {role}"
            )
        return entry

    def _aes(self, entry: _Entry) -> bytes:
        if entry.info.algorithm == "TDES2":
            raise KeyStoreError(f"key {entry.info.key_id} is TDES2; an AES key is needed here")
        return entry.key

    # -- administration ------------------------------------------------------------------

    def create_bdk(self, key_id: str, algorithm: KeyAlgorithm, purpose: KeyPurpose) -> KeyInfo:
        """Generate a key (a BDK, or a KBPK for ``purpose="kbpk"``) from ``random``."""
        length = KEY_LENGTHS.get(algorithm)
        if length is None:
            raise KeyStoreError(f"unknown key algorithm {algorithm!r}")
        key = self._random(length)
        if algorithm == "TDES2":
            key = _tdes_parity(key)
        role: KeyRole = "kbpk" if purpose == "kbpk" else "bdk"
        return self._add(key_id, algorithm, purpose, role, key)

    def list_keys(self) -> list[KeyInfo]:
        return [self._entries[key_id].info for key_id in sorted(self._entries)]

    def import_tr31(
        self, key_id: str, purpose: KeyPurpose, kbpk_id: str, key_block: str
    ) -> KeyInfo:
        kbpk = self._get(kbpk_id, "kbpk", "kbpk").key
        try:
            header, key = tr31.unwrap(kbpk, key_block)
        except tr31.KeyBlockError as exc:
            raise KeyBlockRefused(f"TR-31 block refused: {exc}") from None
        algorithm, role = role_for_tr31(header, key, purpose)
        return self._add(key_id, algorithm, purpose, role, key)

    def import_components(
        self,
        key_id: str,
        algorithm: KeyAlgorithm,
        purpose: KeyPurpose,
        components: list[tuple[bytes, str]],
    ) -> KeyInfo:
        check_algorithm_purpose(algorithm, purpose)
        key = combine_components(algorithm, components)
        try:
            role: KeyRole = "kbpk" if purpose == "kbpk" else "bdk"
            return self._add(key_id, algorithm, purpose, role, bytes(key))
        finally:
            key[:] = bytes(len(key))

    def export_initial_key_tr31(self, bdk_id: str, initial_key_id: bytes, kbpk_id: str) -> str:
        ikid = check_initial_key_id(initial_key_id)
        bdk = self._bdk_any(bdk_id)
        kbpk = self._aes(self._get(kbpk_id, "kbpk", "kbpk"))
        return self._export_initial(bdk, ikid, kbpk, kbpk_id)[0]

    def export_initial_key_tr31_under(
        self, bdk_id: str, initial_key_id: bytes, kbpk: bytes
    ) -> tuple[str, str]:
        """As :meth:`export_initial_key_tr31`, wrapped under ``kbpk`` given by value
        (16, 24 or 32 bytes of AES key, e.g. agreed by ECDH at enrolment); returns the
        TR-31 block and the initial key's KCV. The KBPK is not kept."""
        ikid = check_initial_key_id(initial_key_id)
        given = check_kbpk_value(kbpk)
        bdk = self._bdk_any(bdk_id)
        return self._export_initial(bdk, ikid, given, "the given KBPK")

    def _export_initial(
        self, bdk: bytes, ikid: bytes, kbpk: bytes, kbpk_name: str
    ) -> tuple[str, str]:
        """The one export path: (TR-31 block of the initial key under ``kbpk``, its KCV)."""
        initial_key = aes_initial_key(bdk, ikid)
        kcv = kcv_of(initial_key, "AES")
        header = initial_key_header(ikid, kcv)
        try:
            return tr31.wrap(kbpk, header, initial_key, random=self._random), kcv
        except tr31.KeyBlockError as exc:
            raise KeyStoreError(f"cannot wrap under {kbpk_name}: {exc}") from None

    def _bdk_any(self, bdk_id: str) -> bytes:
        entry = self._entries.get(bdk_id)
        if entry is None:
            raise UnknownKey(f"no key {bdk_id!r} in the store")
        return self._aes(self._get(bdk_id, entry.info.purpose, "bdk"))

    # -- hot path ------------------------------------------------------------------------

    def envelope_aead(self, bdk_id: str, header: EnvelopeHeader) -> AESGCM:
        bdk = self._aes(self._get(bdk_id, "data", "bdk"))
        ksn = header.ksn_bytes
        ikid = ksn[:8]
        host = self._hosts.get_or_create(
            (bdk_id, ikid), lambda: AesHostKeys(aes_initial_key(bdk, ikid), ikid)
        )
        try:
            key = working_key(host, header)
        except ValueError:  # KsnError, or a working key stronger than the BDK
            raise EnvelopeError("envelope cannot be opened") from None
        return AESGCM(key)

    def _decipher(self, bdk_id: str, pin_block: EncryptedPinBlock, pan: str) -> str:
        entry = self._get(bdk_id, "pin", "bdk")
        ksn, block = pin_block_bytes(pin_block)
        if pin_block.format == 4 and len(ksn) == 12:
            # The PIN pad's derivation path is cached like a terminal's (AesHostKeys).
            bdk = self._aes(entry)
            ikid = ksn[:8]
            host = self._hosts.get_or_create(
                (bdk_id, ikid), lambda: AesHostKeys(aes_initial_key(bdk, ikid), ikid)
            )
            try:
                pin_key = host.working_key(ksn, "pin", "AES128")
            except ValueError:
                raise KeyStoreError("the PIN block's KSN cannot be used") from None
            return pinblock.decipher_format4(pin_key, block, pan)
        if pin_block.format == 0 and len(ksn) == 10:
            if entry.info.algorithm != "TDES2":
                raise KeyStoreError(f"key {bdk_id} is AES; format 0 blocks need a TDES2 PIN BDK")
            ipek = tdes_ipek(entry.key, ksn)
            return pinblock.decipher_format0_tdes_dukpt(ipek, ksn, block, pan)
        raise KeyStoreError(
            "PIN blocks are format 4 with a 12-byte KSN (AES DUKPT) or format 0 with a "
            "10-byte KSN (TDES DUKPT)"
        )

    def verify_pin(
        self,
        bdk_id: str,
        pin_block: EncryptedPinBlock,
        pan: str,
        check: Callable[[bytearray], bool],
    ) -> bool:
        return run_check(self._decipher(bdk_id, pin_block, pan), check)

    def translate_pin_block(
        self,
        bdk_id: str,
        pin_block: EncryptedPinBlock,
        pan: str,
        zone_key_id: str,
        zone_format: Literal[0, 4],
    ) -> bytes:
        zone = self._get(zone_key_id, "pin", "zpk")
        if zone_format == 4:
            zone_key = self._aes(zone)
            pin = self._decipher(bdk_id, pin_block, pan)
            return pinblock.encipher_format4(zone_key, pin, pan, random=self._random)
        if zone_format == 0:
            if zone.info.algorithm != "TDES2":
                raise KeyStoreError(f"zone key {zone_key_id} is AES; format 0 needs TDES2")
            pin = self._decipher(bdk_id, pin_block, pan)
            return zone_encipher_format0(zone.key, pin, pan)
        raise KeyStoreError("zone PIN block format is 0 or 4")
