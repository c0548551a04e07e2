"""The PKCS#11 key store: keys in a token, AES DUKPT derived inside it (DESIGN sections 5, 9).

Built on python-pkcs11 and tested against SoftHSM2; see docs/key-store.md for the security
boundary. What runs where:

* AES DUKPT (ANSI X9.24-3-2017 6.1-6.4): the initial key, each step of the walk over the
  transaction counter's one-bits and the working key are ``C_DeriveKey`` with
  ``CKM_AES_ECB_ENCRYPT_DATA`` over the standard's derivation data. Every derived key is a
  session object (``CKA_TOKEN`` false) with ``CKA_SENSITIVE`` true and
  ``CKA_EXTRACTABLE`` false, forced in :meth:`Pkcs11KeyStore._derive`, the one place keys
  are derived (SoftHSM2 would otherwise accept an extractable, non-sensitive template).
  The derivation path of each terminal's last KSN is cached (bounded LRU, objects
  destroyed on eviction); working keys are derived per operation and destroyed after it.
* Envelopes: AES-GCM (``CKM_AES_GCM``, 96-bit nonce, 128-bit tag) inside the token through
  :class:`TokenAead`, which has cryptography's ``AESGCM`` call shape.
* PIN blocks (ISO 9564-1 format 4): the PIN key is derived in the token and the block is
  deciphered with ``C_Decrypt`` (AES-ECB) in the token; PKCS#11 has no PIN-verify
  mechanism, so the clear PIN field reaches the bridge's memory for the check. Translation
  re-enciphers under a zone PIN key in the token (format 4 only).
* TR-31 / X9.143 version D: the KBEK and KBAK (CMAC KDF of X9.143 7.3.2) are derived in
  the token with ``CKM_AES_ECB_ENCRYPT_DATA``: a one-block CMAC is one AES encryption of
  the padded message XOR the subkey K2, and K2 comes from ``L = AES(KBPK, 0^128)``, which
  the token computes (the KBPK therefore has ``CKA_ENCRYPT``). Import deciphers the key
  data with the KBEK (AES-CBC, IV = MAC) and checks the CMAC with the KBAK in the token;
  the imported key passes through the bridge's memory before ``C_CreateObject``.
  Export: a TR-31 MAC covers the clear key, which no PKCS#11 mechanism can feed from a key
  object, so the initial key being exported is derived with ``CKA_EXTRACTABLE`` true and
  ``CKA_SENSITIVE`` false on that path only, read once, and its session object destroyed;
  the KBPK never leaves the token. A KBPK given by value (enrolment's ECDH-agreed key,
  :meth:`Pkcs11KeyStore.export_initial_key_tr31_under`) becomes a sensitive,
  non-extractable session object for the one export and is destroyed after it.

Not supported (clear errors): TDES keys. TDES DUKPT cannot run inside SoftHSM2 (no XOR,
concatenate or extract mechanisms), and python-pkcs11 cannot pack the parameter of
``CKM_DES3_ECB_ENCRYPT_DATA``. ``CKA_DERIVE_TEMPLATE`` is never used (python-pkcs11
crashes on it). Tokens are selected by label, never by slot number.

Key metadata (purpose, role, algorithm, KCV, creation time) is kept in ``CKA_ID`` as
``gwb1:`` and JSON; ``CKA_LABEL`` is the key id. Stored keys get only the capability their
role needs: BDKs ``CKA_DERIVE``; KBPKs ``CKA_DERIVE`` and ``CKA_ENCRYPT``; zone PIN keys
``CKA_ENCRYPT``. A generated key gets ``CKA_SIGN`` for its CMAC KCV, then loses it.

One PKCS#11 session serves the store; a lock serialises token calls (a session runs one
operation at a time).
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol, cast

import pkcs11 as p11
from cryptography.exceptions import InvalidTag
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11_errors
from pkcs11.mechanisms import GCMParams

from gateway_bridge.keystore.base import (
    KeyAlgorithm,
    KeyBlockRefused,
    KeyInfo,
    KeyPurpose,
    KeyStoreError,
    KeyStoreLocked,
    UnknownKey,
)
from gateway_bridge.keystore.software import (
    DEFAULT_CACHE_SIZE,
    KEY_LENGTHS,
    KeyRole,
    LruCache,
    check_algorithm_purpose,
    check_initial_key_id,
    check_kbpk_value,
    check_key_id,
    combine_components,
    initial_key_header,
    kcv_of,
    pin_block_bytes,
    role_for_tr31,
    run_check,
)
from paycore import pinblock, tr31
from paycore.dukpt import KsnError
from paycore.errors import EnvelopeError
from paycore.wire import EncryptedPinBlock, EnvelopeHeader

__all__ = ["Pkcs11KeyStore", "TokenAead"]

Clock = Callable[[], datetime]
RandomSource = Callable[[int], bytes]
Template = dict[Attribute, Any]

_META: Final = b"gwb1:"
_NO_USE: Final[Template] = {
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
    Attribute.DERIVE: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
}
_LOCKED_DOWN: Final[Template] = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False}
_ROLE_USES: Final[dict[str, Template]] = {
    "bdk": {Attribute.DERIVE: True},
    "kbpk": {Attribute.DERIVE: True, Attribute.ENCRYPT: True},
    "zpk": {Attribute.ENCRYPT: True},
}

# ANSI X9.24-3-2017 6.3.2 tables 2 and 3.
_USAGE_CODE: Final[dict[str, int]] = {
    "pin": 0x1000,
    "data_encrypt": 0x3000,
    "data_decrypt": 0x3001,
    "derivation": 0x8000,
    "initial": 0x8001,
}
_KEY_TYPE: Final[dict[str, tuple[int, int]]] = {
    "AES128": (0x0002, 128),
    "AES192": (0x0003, 192),
    "AES256": (0x0004, 256),
}
_TYPE_BY_LEN: Final[dict[int, str]] = {16: "AES128", 24: "AES192", 32: "AES256"}
_GCM_FAILURES: Final = (
    p11_errors.GeneralError,
    p11_errors.EncryptedDataInvalid,
    p11_errors.EncryptedDataLenRange,
    p11_errors.DataLenRange,
    p11_errors.FunctionFailed,
)


class TokenKey(Protocol):
    """The calls this store makes on a python-pkcs11 secret key object."""

    def derive_key(
        self,
        key_type: KeyType,
        key_length: int,
        *,
        mechanism: Mechanism,
        mechanism_param: bytes,
        template: Template,
    ) -> TokenKey: ...

    def encrypt(
        self, data: bytes, *, mechanism: Mechanism, mechanism_param: bytes | GCMParams | None = None
    ) -> bytes: ...

    def decrypt(
        self, data: bytes, *, mechanism: Mechanism, mechanism_param: bytes | GCMParams | None = None
    ) -> bytes: ...

    def sign(self, data: bytes, *, mechanism: Mechanism) -> bytes: ...

    def destroy(self) -> None: ...

    def __getitem__(self, key: Attribute) -> Any: ...  # noqa: ANN401

    def __setitem__(self, key: Attribute, value: Any) -> None: ...  # noqa: ANN401


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _xor(left: bytes, right: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(left, right, strict=True))


def dukpt_data(usage: str, key_type: str, tail: bytes) -> bytes:
    """X9.24-3-2017 6.3.2 derivation data: one 16-byte block per 128 bits of the new key."""
    algorithm, bits = _KEY_TYPE[key_type]
    head = _USAGE_CODE[usage].to_bytes(2, "big") + algorithm.to_bytes(2, "big")
    return b"".join(
        bytes((0x01, counter)) + head + bits.to_bytes(2, "big") + tail
        for counter in range(1, (bits + 127) // 128 + 1)
    )


def _counter(ksn: bytes) -> int:
    """The transaction counter of a 12-byte AES DUKPT KSN, checked (X9.24-3-2017 6.1)."""
    if len(ksn) != 12:
        raise KsnError("AES DUKPT KSN must be 12 bytes", field="ksn")
    counter = int.from_bytes(ksn[8:], "big")
    if counter == 0 or counter.bit_count() > 16:
        raise KsnError("transaction counter is not usable", field="ksn transaction counter")
    return counter


def _cmac_dbl(block: bytes) -> bytes:
    """NIST SP 800-38B subkey doubling in GF(2^128)."""
    value = int.from_bytes(block, "big") << 1
    if value >> 128:
        value = (value & (1 << 128) - 1) ^ 0x87
    return value.to_bytes(16, "big")


def _tr31_header_text(header: tr31.KeyBlockHeader, body_chars: int) -> str:
    """X9.143 6.2 header text, with a PB pad block if needed (multiple of 16 characters)."""
    optional = "".join(
        f"{block_id}{len(data) + 4:02X}{data}" for block_id, data in header.optional_blocks
    )
    count = len(header.optional_blocks)
    length = 16 + len(optional)
    if length % 16:
        pad = 16 - length % 16
        pad += 16 if pad < 4 else 0
        optional += f"PB{pad:02X}" + "0" * (pad - 4)
        count += 1
        length += pad
    total = length + body_chars + 32
    return (
        f"{header.version_id}{total:04d}{header.key_usage}{header.algorithm}"
        f"{header.mode_of_use}{header.version_num}{header.exportability}{count:02d}00{optional}"
    )


def _tr31_header_length(block: str) -> int:
    """Where the header of a key block ends (optional blocks with 2-digit lengths only)."""
    try:
        count = int(block[12:14])
        position = 16
        for _ in range(count):
            size = int(block[position + 2 : position + 4], 16)
            if size < 4:
                raise KeyBlockRefused("TR-31 block refused: extended optional block lengths")
            position += size
    except ValueError:
        raise KeyBlockRefused("TR-31 block refused: header is malformed") from None
    return position


class _TokenPath:
    """One terminal's initial key in the token and its last KSN's derivation path."""

    __slots__ = ("_id_right", "_initial", "_key_type", "_path", "_store")

    def __init__(
        self, store: Pkcs11KeyStore, initial: TokenKey, key_type: str, ikid: bytes
    ) -> None:
        self._store = store
        self._initial = initial
        self._key_type = key_type
        self._id_right = ikid[4:8]
        self._path: list[tuple[int, TokenKey]] = []

    def derivation_key(self, counter: int) -> TokenKey:
        keep = 0
        for register, _ in self._path:
            low = register & -register
            if counter & ~(low - 1) != register:
                break
            keep += 1
        for _, dropped in self._path[keep:]:
            dropped.destroy()
        path = self._path[:keep]
        self._path = path
        register, key = path[-1] if path else (0, self._initial)
        rest = counter ^ register
        size = KEY_LENGTHS[self._key_type]
        while rest:
            top = 1 << (rest.bit_length() - 1)
            rest ^= top
            register |= top
            data = dukpt_data(
                "derivation", self._key_type, self._id_right + register.to_bytes(4, "big")
            )
            key = self._store._derive(key, data, size, {Attribute.DERIVE: True})
            path.append((register, key))
        return key

    def working_key(self, ksn: bytes, usage: str, key_type: str, uses: Template) -> TokenKey:
        counter = _counter(ksn)
        derivation = self.derivation_key(counter)
        data = dukpt_data(usage, key_type, self._id_right + ksn[8:12])
        return self._store._derive(derivation, data, KEY_LENGTHS[key_type], uses)

    def destroy(self) -> None:
        for _, key in self._path:
            key.destroy()
        self._path = []
        self._initial.destroy()

    def __repr__(self) -> str:
        return f"_TokenPath(depth={len(self._path)})"


class TokenAead:
    """AES-GCM under an envelope's DUKPT working key, derived in the token for each call.

    Same call shape as cryptography's ``AESGCM``; ``decrypt`` raises
    :class:`cryptography.exceptions.InvalidTag` when authentication fails.
    """

    __slots__ = ("_bdk_id", "_key_type", "_ksn", "_store", "_usage")

    def __init__(
        self, store: Pkcs11KeyStore, bdk_id: str, ksn: bytes, usage: str, key_type: str
    ) -> None:
        self._store = store
        self._bdk_id = bdk_id
        self._ksn = ksn
        self._usage = usage
        self._key_type = key_type

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        return self._store._gcm(self._args(), True, nonce, data, associated_data)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        return self._store._gcm(self._args(), False, nonce, data, associated_data)

    def _args(self) -> tuple[str, bytes, str, str]:
        return self._bdk_id, self._ksn, self._usage, self._key_type

    def __repr__(self) -> str:
        return f"TokenAead(bdk={self._bdk_id!r}, ksn={self._ksn.hex().upper()}, {self._usage})"


class Pkcs11KeyStore:
    """Keys in a PKCS#11 token selected by label; see the module docstring.

    ``module_path`` is the PKCS#11 library (``libsofthsm2.so`` in tests); ``user_pin`` the
    token's user PIN. A wrong PIN, an unknown label or a library that does not load raise
    :class:`KeyStoreLocked`. Call :meth:`close` (or use ``with``) to destroy the session
    objects and close the session.
    """

    def __init__(
        self,
        module_path: Path | str,
        token_label: str,
        user_pin: str,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        random: RandomSource = secrets.token_bytes,
        clock: Clock = _utcnow,
    ) -> None:
        self._label = token_label
        self._random = random
        self._clock = clock
        self._lock = threading.RLock()
        try:
            lib = p11.lib(str(module_path))
        except (p11_errors.PKCS11Error, OSError, RuntimeError):
            raise KeyStoreLocked(f"cannot load the PKCS#11 module {module_path}") from None
        try:
            token = lib.get_token(token_label=token_label)
        except p11_errors.PKCS11Error:
            raise KeyStoreLocked(f"no single PKCS#11 token labelled {token_label!r}") from None
        try:
            try:
                self._session = token.open(rw=True, user_pin=user_pin)
            except p11_errors.UserAlreadyLoggedIn:
                # PKCS#11 login state belongs to the process: another session of this
                # process has logged in to the token already (docs/key-store.md).
                self._session = token.open(rw=True)
        except p11_errors.PKCS11Error as exc:
            raise KeyStoreLocked(
                f"token {token_label!r} refused the session or PIN ({type(exc).__name__})"
            ) from None
        self._keys: dict[str, tuple[TokenKey, KeyInfo, KeyRole]] = {}
        self._paths: LruCache[tuple[str, bytes], _TokenPath] = LruCache(
            cache_size, lambda path: path.destroy()
        )

    def __repr__(self) -> str:
        return f"Pkcs11KeyStore(token_label={self._label!r})"

    def __enter__(self) -> Pkcs11KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Destroy the cached session objects and close the session."""
        with self._lock:
            self._paths.clear()
            self._session.close()

    # -- derivation: the one place keys are derived --------------------------------------

    def _derive(self, parent: TokenKey, data: bytes, size: int, uses: Template) -> TokenKey:
        """``CKM_AES_ECB_ENCRYPT_DATA``: a sensitive, non-extractable session key."""
        template = {**_NO_USE, **uses, Attribute.TOKEN: False, **_LOCKED_DOWN}
        return parent.derive_key(
            KeyType.AES,
            size * 8,
            mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
            mechanism_param=data,
            template=template,
        )

    def _derive_for_export(self, parent: TokenKey, data: bytes, size: int) -> bytes:
        """The export path only: derive a readable session key, read it, destroy it."""
        template = {
            **_NO_USE,
            Attribute.TOKEN: False,
            Attribute.SENSITIVE: False,
            Attribute.EXTRACTABLE: True,
        }
        key = parent.derive_key(
            KeyType.AES,
            size * 8,
            mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
            mechanism_param=data,
            template=template,
        )
        try:
            return bytes(key[Attribute.VALUE])
        finally:
            key.destroy()

    # -- stored keys ---------------------------------------------------------------------

    def _lookup(self, key_id: str) -> tuple[TokenKey, KeyInfo, KeyRole] | None:
        cached = self._keys.get(key_id)
        if cached is not None:
            return cached
        found = [
            obj
            for obj in self._session.get_objects(
                {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: key_id}
            )
            if bytes(obj[Attribute.ID]).startswith(_META)
        ]
        if not found:
            return None
        if len(found) > 1:
            raise KeyStoreError(f"token holds {len(found)} keys labelled {key_id!r}")
        key = cast(TokenKey, found[0])
        info, role = self._parse_meta(key_id, bytes(key[Attribute.ID]))
        self._keys[key_id] = (key, info, role)
        return self._keys[key_id]

    @staticmethod
    def _parse_meta(key_id: str, raw: bytes) -> tuple[KeyInfo, KeyRole]:
        try:
            meta = json.loads(raw[len(_META) :])
            info = KeyInfo(
                key_id=key_id,
                algorithm=meta["algorithm"],
                purpose=meta["purpose"],
                kcv=meta["kcv"],
                created_at=datetime.fromisoformat(meta["created_at"]),
            )
            return info, meta["role"]
        except (ValueError, KeyError, TypeError):
            raise KeyStoreError(f"key {key_id!r} has unreadable metadata") from None

    def _get(self, key_id: str, purpose: str, role: KeyRole) -> tuple[TokenKey, KeyInfo]:
        with self._lock:
            found = self._lookup(key_id)
        if found is None:
            raise UnknownKey(f"no key {key_id!r} in token {self._label!r}")
        key, info, actual = found
        if info.purpose != purpose or actual != role:
            raise KeyStoreError(
                f"key {key_id} is a {info.purpose} {actual}, not a {purpose} {role}"
            )
        return key, info

    def _add(
        self, key_id: str, algorithm: str, purpose: str, role: KeyRole, key: bytes | None
    ) -> KeyInfo:
        check_key_id(key_id)
        check_algorithm_purpose(algorithm, purpose)
        if algorithm == "TDES2":
            raise KeyStoreError(
                "the PKCS#11 store holds AES keys only: TDES DUKPT cannot run inside the "
                "token (no XOR/concatenate mechanisms); keep TDES keys in the software store"
            )
        size = KEY_LENGTHS[algorithm]
        if key is not None and len(key) != size:
            raise KeyStoreError(f"key {key_id} has the wrong length for {algorithm}")
        template = {
            **_NO_USE,
            **_ROLE_USES[role],
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            **_LOCKED_DOWN,
        }
        with self._lock:
            if self._lookup(key_id) is not None:
                raise KeyStoreError(f"key {key_id} already exists")
            created_at = self._clock()
            try:
                if key is None:
                    obj = cast(
                        TokenKey,
                        self._session.generate_key(
                            KeyType.AES,
                            size * 8,
                            label=key_id,
                            store=True,
                            template={**template, Attribute.SIGN: True},
                        ),
                    )
                    kcv = obj.sign(bytes(16), mechanism=Mechanism.AES_CMAC)[:3].hex().upper()
                    obj[Attribute.SIGN] = False
                else:
                    kcv = kcv_of(key, algorithm)
                    created = self._session.create_object(
                        {
                            Attribute.CLASS: ObjectClass.SECRET_KEY,
                            Attribute.KEY_TYPE: KeyType.AES,
                            Attribute.VALUE: bytes(key),
                            Attribute.LABEL: key_id,
                            **template,
                        }
                    )
                    obj = cast(TokenKey, created)
                info = KeyInfo(
                    key_id=key_id,
                    algorithm=algorithm,  # type: ignore[arg-type]
                    purpose=purpose,  # type: ignore[arg-type]
                    kcv=kcv,
                    created_at=created_at,
                )
                meta = {
                    "algorithm": algorithm,
                    "purpose": purpose,
                    "role": role,
                    "kcv": kcv,
                    "created_at": created_at.isoformat(),
                }
                obj[Attribute.ID] = _META + json.dumps(meta, separators=(",", ":")).encode()
            except p11_errors.PKCS11Error as exc:
                raise KeyStoreError(
                    f"token refused to store {key_id} ({type(exc).__name__})"
                ) from None
            self._keys[key_id] = (obj, info, role)
        return info

    # -- administration ------------------------------------------------------------------

    def create_bdk(self, key_id: str, algorithm: KeyAlgorithm, purpose: KeyPurpose) -> KeyInfo:
        """Generate a key inside the token (a BDK, or a KBPK for ``purpose="kbpk"``)."""
        role: KeyRole = "kbpk" if purpose == "kbpk" else "bdk"
        return self._add(key_id, algorithm, purpose, role, None)

    def list_keys(self) -> list[KeyInfo]:
        infos: list[KeyInfo] = []
        with self._lock:
            for obj in self._session.get_objects(
                {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: True}
            ):
                raw = bytes(obj[Attribute.ID])
                if raw.startswith(_META):
                    infos.append(self._parse_meta(str(obj[Attribute.LABEL]), raw)[0])
        return sorted(infos, key=lambda info: info.key_id)

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

    def _tr31_keys(self, kbpk: TokenKey, size: int) -> tuple[TokenKey, TokenKey]:
        """KBEK and KBAK of X9.143 7.3.2 (CMAC KDF), derived inside the token."""
        subkey_l = kbpk.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
        k2 = _cmac_dbl(_cmac_dbl(subkey_l))
        algorithm, bits = _KEY_TYPE[_TYPE_BY_LEN[size]]
        blocks = 1 if size == 16 else 2

        def data(usage: int) -> bytes:
            return b"".join(
                _xor(
                    bytes((counter,))
                    + usage.to_bytes(2, "big")
                    + b"\x00"
                    + algorithm.to_bytes(2, "big")
                    + bits.to_bytes(2, "big")
                    + b"\x80"
                    + bytes(7),
                    k2,
                )
                for counter in range(1, blocks + 1)
            )

        kbek = self._derive(kbpk, data(0), size, {Attribute.ENCRYPT: True, Attribute.DECRYPT: True})
        kbak = self._derive(kbpk, data(1), size, {Attribute.SIGN: True})
        return kbek, kbak

    def import_tr31(
        self, key_id: str, purpose: KeyPurpose, kbpk_id: str, key_block: str
    ) -> KeyInfo:
        kbpk, kbpk_info = self._get(kbpk_id, "kbpk", "kbpk")
        if not isinstance(key_block, str) or not key_block.isascii() or len(key_block) > 9999:
            raise KeyBlockRefused("TR-31 block refused: not ASCII text of at most 9999 characters")
        if key_block[:1] != "D":
            raise KeyBlockRefused("TR-31 block refused: the PKCS#11 store imports version D only")
        try:
            header = tr31.KeyBlockHeader.parse(key_block)
        except tr31.KeyBlockError as exc:
            raise KeyBlockRefused(f"TR-31 block refused: {exc}") from None
        header_len = _tr31_header_length(key_block)
        body = key_block[header_len:]
        if (
            key_block[1:5] != f"{len(key_block):04d}"
            or len(body) < 64
            or len(body) % 32
            or any(ch not in "0123456789ABCDEF" for ch in body)
        ):
            raise KeyBlockRefused("TR-31 block refused: length or key data is malformed")
        encrypted, mac = bytes.fromhex(body[:-32]), bytes.fromhex(body[-32:])
        with self._lock:
            kbek, kbak = self._tr31_keys(kbpk, KEY_LENGTHS[kbpk_info.algorithm])
            try:
                clear = kbek.decrypt(encrypted, mechanism=Mechanism.AES_CBC, mechanism_param=mac)
                expected = kbak.sign(
                    key_block[:header_len].encode("ascii") + clear, mechanism=Mechanism.AES_CMAC
                )
            finally:
                kbek.destroy()
                kbak.destroy()
        if not hmac.compare_digest(expected, mac):
            raise KeyBlockRefused("TR-31 block refused: key block MAC does not verify")
        bits = int.from_bytes(clear[:2], "big")
        if bits % 8 or not 0 < bits // 8 <= len(clear) - 2:
            raise KeyBlockRefused("TR-31 block refused: decrypted key length is not valid")
        key = clear[2 : 2 + bits // 8]
        algorithm, role = role_for_tr31(header, key, purpose)
        return self._add(key_id, algorithm, purpose, role, key)

    def export_initial_key_tr31(self, bdk_id: str, initial_key_id: bytes, kbpk_id: str) -> str:
        ikid = check_initial_key_id(initial_key_id)
        bdk, bdk_info = self._bdk_any(bdk_id)
        kbpk, kbpk_info = self._get(kbpk_id, "kbpk", "kbpk")
        return self._export_initial(bdk, bdk_info, ikid, kbpk, KEY_LENGTHS[kbpk_info.algorithm])[0]

    def export_initial_key_tr31_under(
        self, bdk_id: str, initial_key_id: bytes, kbpk: bytes
    ) -> tuple[str, str]:
        """As :meth:`export_initial_key_tr31`, wrapped under ``kbpk`` given by value
        (16, 24 or 32 bytes of AES key, e.g. agreed by ECDH at enrolment); returns the
        TR-31 block and the initial key's KCV.

        The KBPK becomes a session object (``CKA_TOKEN`` false, sensitive, not
        extractable, able only to encrypt and derive, as the TR-31 key derivation needs)
        for this one export, and is destroyed before the call returns.
        """
        ikid = check_initial_key_id(initial_key_id)
        given = check_kbpk_value(kbpk)
        bdk, bdk_info = self._bdk_any(bdk_id)
        template = {
            **_NO_USE,
            **_ROLE_USES["kbpk"],
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.VALUE: given,
            Attribute.TOKEN: False,
            Attribute.PRIVATE: True,
            **_LOCKED_DOWN,
        }
        with self._lock:
            try:
                session_kbpk = cast(TokenKey, self._session.create_object(template))
            except p11_errors.PKCS11Error as exc:
                raise KeyStoreError(
                    f"token refused the given KBPK ({type(exc).__name__})"
                ) from None
            del given, template
            try:
                return self._export_initial(bdk, bdk_info, ikid, session_kbpk, len(kbpk))
            finally:
                session_kbpk.destroy()

    def _bdk_any(self, bdk_id: str) -> tuple[TokenKey, KeyInfo]:
        """A stored data or PIN BDK."""
        with self._lock:
            found = self._lookup(bdk_id)
        if found is None:
            raise UnknownKey(f"no key {bdk_id!r} in token {self._label!r}")
        return self._get(bdk_id, found[1].purpose, "bdk")

    def _export_initial(
        self, bdk: TokenKey, bdk_info: KeyInfo, ikid: bytes, kbpk: TokenKey, kbpk_size: int
    ) -> tuple[str, str]:
        """The one export path: (TR-31 block of ``ikid``'s initial key under ``kbpk``, KCV).

        X9.143 version D: the KBEK and KBAK are derived from ``kbpk`` in the token; the
        initial key is read once (see the module docstring) and only its KCV is kept.
        """
        size = KEY_LENGTHS[bdk_info.algorithm]
        data = dukpt_data("initial", bdk_info.algorithm, ikid)
        masked = max(size, 32)
        pad_len = 16 - (2 + masked) % 16 + (masked - size)
        with self._lock:
            initial_key = self._derive_for_export(bdk, data, size)
            kcv = kcv_of(initial_key, "AES")
            header = initial_key_header(ikid, kcv)
            clear = (size * 8).to_bytes(2, "big") + initial_key + self._random(pad_len)
            del initial_key
            text = _tr31_header_text(header, 2 * len(clear))
            kbek, kbak = self._tr31_keys(kbpk, kbpk_size)
            try:
                mac = kbak.sign(text.encode("ascii") + clear, mechanism=Mechanism.AES_CMAC)
                encrypted = kbek.encrypt(clear, mechanism=Mechanism.AES_CBC, mechanism_param=mac)
            finally:
                kbek.destroy()
                kbak.destroy()
        return text + encrypted.hex().upper() + mac.hex().upper(), kcv

    # -- hot path ------------------------------------------------------------------------

    def _path(self, bdk_id: str, ikid: bytes, purpose: str) -> _TokenPath:
        bdk, info = self._get(bdk_id, purpose, "bdk")

        def create() -> _TokenPath:
            data = dukpt_data("initial", info.algorithm, ikid)
            size = KEY_LENGTHS[info.algorithm]
            initial = self._derive(bdk, data, size, {Attribute.DERIVE: True})
            return _TokenPath(self, initial, info.algorithm, ikid)

        return self._paths.get_or_create((bdk_id, ikid), create)

    def envelope_aead(self, bdk_id: str, header: EnvelopeHeader) -> TokenAead:
        _, info = self._get(bdk_id, "data", "bdk")
        ksn = header.ksn_bytes
        try:
            _counter(ksn)
        except KsnError:
            raise EnvelopeError("envelope cannot be opened") from None
        if _KEY_TYPE[header.key_type][1] > _KEY_TYPE[info.algorithm][1]:
            raise EnvelopeError("envelope cannot be opened")
        return TokenAead(self, bdk_id, ksn, header.usage, header.key_type)

    def _gcm(
        self,
        args: tuple[str, bytes, str, str],
        encrypt: bool,
        nonce: bytes,
        data: bytes,
        associated_data: bytes | None,
    ) -> bytes:
        bdk_id, ksn, usage, key_type = args
        if len(nonce) != 12:
            raise ValueError("AES-GCM nonces here are 12 bytes")
        params = GCMParams(
            bytes(nonce), None if associated_data is None else bytes(associated_data)
        )
        uses = {Attribute.ENCRYPT: True, Attribute.DECRYPT: True}
        with self._lock:
            key = self._path(bdk_id, ksn[:8], "data").working_key(ksn, usage, key_type, uses)
            try:
                if encrypt:
                    return key.encrypt(
                        bytes(data), mechanism=Mechanism.AES_GCM, mechanism_param=params
                    )
                if len(data) < 16:
                    raise InvalidTag
                try:
                    return key.decrypt(
                        bytes(data), mechanism=Mechanism.AES_GCM, mechanism_param=params
                    )
                except _GCM_FAILURES:
                    raise InvalidTag from None
            finally:
                key.destroy()

    def _decipher(self, bdk_id: str, pin_block: EncryptedPinBlock, pan: str) -> str:
        _, info = self._get(bdk_id, "pin", "bdk")
        ksn, block = pin_block_bytes(pin_block)
        if pin_block.format == 0 and len(ksn) == 10:
            raise KeyStoreError(
                f"key {bdk_id} is AES; format 0 blocks need a TDES2 PIN BDK, which the PKCS#11 "
                "store cannot hold (TDES DUKPT does not run inside the token)"
            )
        if pin_block.format != 4 or len(ksn) != 12:
            raise KeyStoreError(
                "PIN blocks are format 4 with a 12-byte KSN (AES DUKPT) or format 0 with a "
                "10-byte KSN (TDES DUKPT)"
            )
        _counter(ksn)
        # The ISO 9564-1 format 4 PAN field (it does not depend on the PIN given here).
        pan_field = pinblock.encode_format4_fields("0000", pan, random=bytes)[1]
        with self._lock:
            key = self._path(bdk_id, ksn[:8], "pin").working_key(
                ksn, "pin", "AES128", {Attribute.DECRYPT: True}
            )
            try:
                middle = key.decrypt(block, mechanism=Mechanism.AES_ECB)
                pin_field = key.decrypt(_xor(middle, pan_field), mechanism=Mechanism.AES_ECB)
            finally:
                key.destroy()
        del info
        return pinblock.decode_format4_pin_field(pin_field)

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
        zone, _ = self._get(zone_key_id, "pin", "zpk")
        if zone_format == 0:
            raise KeyStoreError(f"zone key {zone_key_id} is AES; format 0 needs TDES2")
        if zone_format != 4:
            raise KeyStoreError("zone PIN block format is 0 or 4")
        pin = self._decipher(bdk_id, pin_block, pan)
        pin_field, pan_field = pinblock.encode_format4_fields(pin, pan, random=self._random)
        del pin
        with self._lock:
            middle = zone.encrypt(pin_field, mechanism=Mechanism.AES_ECB)
            return zone.encrypt(_xor(middle, pan_field), mechanism=Mechanism.AES_ECB)
