"""The emulated EMV contact card: an ICC answering like a real one.

Implements the card side of EMV 4.4 Book 1 (section 11, application selection: PSE,
directory records, SELECT by full and partial AID with "next occurrence") and Book 3
(section 6.5 commands, section 10 transaction flow), on ISO/IEC 7816-4 APDUs:

========  ====  =============================================================
command   INS   answers (besides 9000)
========  ====  =============================================================
SELECT    A4    6A82 not found, 6283 blocked application (FCI still sent),
                6A86 P1/P2, 6700 no name
READ REC  B2    6A83 no such record, 6A82 no such SFI, 6A86 P1/P2, 6985 nothing selected
GPO       A8    6985 not selected / blocked / repeated, 6700 PDOL data length,
                6A80 not an 83 template, 6A86 P1/P2
GET DATA  CA    9F36 ATC, 9F13 last online ATC, 9F17 PIN try counter, 9F4F log
                format; 6A88 anything else
VERIFY    20    P2 80 plaintext PIN: 63Cx wrong (x tries left), 6983 blocked,
                6984 no offline PIN, 6A81 P2 88 (enciphered PIN not supported),
                no data: 63Cx = tries left (ISO/IEC 7816-4 7.5.6)
GEN AC    AE    6985 out of sequence, 6700 CDOL data length, 6A86 P1/P2
GET RESP  C0    6985 (nothing waiting; the T=0 fault personality answers it)
others          6D00 unknown INS, 6E00 unknown CLA, 6700 malformed APDU
========  ====  =============================================================

GENERATE AC (Book 3 6.5.5, 9.3): P1 b8-b7 ask for AAC (00), TC (40) or ARQC (80).
This card has no ICC private key (its AIP never announces CDA), so the CDA bit (b5)
and the RFU bits are refused with 6A86, as is an ARQC at the second GENERATE AC. The
card may only go down (TC -> ARQC -> AAC): a TC request becomes an ARQC when its card
risk management says so (:attr:`Cvr.go_online`: new card, last online transaction not
completed, issuer authentication failed last time, PIN try limit exceeded, offline
PIN failed, consecutive offline limit reached) or the application is online-only.

The ATC increments at GET PROCESSING OPTIONS, once per transaction. The second
GENERATE AC checks the ARPC in tag 91 (from CDOL2): a wrong one gives an AAC with the
CVR's "issuer authentication failed" bit, and the next transaction goes online; all
zeros or no tag 91 means no issuer authentication data.

Counters (ATC, PIN try counter, offline counters, last online ATC and the flags card
risk management reads) are non-volatile: they survive power_off/power_on. Selection and
transaction state do not.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, auto

from paycore import dol as _dol
from paycore import tlv as _tlv
from paycore.tlv import Tlv

from .apdu import SW, Command, CommandError, parse_command, response
from .crypto import AcType, CryptogramEngine, Cvr, engine_for
from .faults import Clock, FaultInjector, Faults, SystemClock
from .profile import ApplicationProfile, CardProfile, build_records, profile_tags

__all__ = ["PPSE_NAME", "PSE_NAME", "EmvCard"]

PSE_NAME = b"1PAY.SYS.DDF01"
PPSE_NAME = b"2PAY.SYS.DDF01"

_ISO, _PROPRIETARY = 0x00, 0x80
_DECLINED_ONLINE_ARC = (b"Y3", b"Z3")  # ARC when the terminal could not go online


class _Phase(Enum):
    SELECTED = auto()
    GPO_DONE = auto()
    ARQC_ISSUED = auto()
    DONE = auto()


@dataclass
class _Counters:
    """Non-volatile data of one application."""

    atc: int
    last_online_atc: int
    pin_tries: int
    consecutive_offline: int = 0
    cumulative_offline: int = 0
    last_online_not_completed: bool = False
    issuer_auth_failed_last: bool = False


@dataclass
class _Session:
    """Volatile state: what is selected and how far the transaction is."""

    current: str = "none"  # none | pse | ppse | app
    app: int | None = None
    phase: _Phase = _Phase.SELECTED
    pin_performed: bool = False
    pin_failed: bool = False
    cdol1: dict[int, bytes] = field(default_factory=dict)
    arqc: bytes = b""


@dataclass
class _Application:
    profile: ApplicationProfile
    engine: CryptogramEngine
    records: dict[tuple[int, int], bytes]
    counters: _Counters


def _split(dol: bytes, data: bytes) -> dict[int, bytes]:
    values: dict[int, bytes] = {}
    pos = 0
    for entry in _dol.parse(dol):
        values.setdefault(entry.tag, data[pos : pos + entry.length])
        pos += entry.length
    return values


def _bcd_amount(value: bytes) -> int:
    text = value.hex()
    return int(text) if text.isdigit() else 0


class EmvCard:
    """An emulated EMV contact card built from a :class:`CardProfile`.

    Implements :class:`hardware.card_interface.CardApplication`. ``faults`` switches on
    a fault personality (:mod:`hardware.cards.faults`); ``clock`` is what a slow card
    waits with.
    """

    def __init__(
        self,
        profile: CardProfile,
        *,
        faults: Faults | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.profile = profile
        self.faults = faults or Faults()
        self._injector = FaultInjector(self.faults, clock or SystemClock())
        self._apps = [self._personalise(app) for app in profile.applications]
        self._session = _Session()
        self._powered = False
        self._handlers: dict[tuple[int, int], Callable[[Command], tuple[bytes, int]]] = {
            (_ISO, 0xA4): self._select,
            (_ISO, 0xB2): self._read_record,
            (_ISO, 0x20): self._verify,
            (_ISO, 0xC0): self._get_response,
            (_PROPRIETARY, 0xA8): self._get_processing_options,
            (_PROPRIETARY, 0xCA): self._get_data,
            (_PROPRIETARY, 0xAE): self._generate_ac,
        }

    @staticmethod
    def _personalise(app: ApplicationProfile) -> _Application:
        engine = engine_for(
            app.cvn,
            dki=app.dki,
            iss_mk_ac=app.keys.ac.get_secret_value(),
            iss_mk_smi=app.keys.smi.get_secret_value(),
            iss_mk_smc=app.keys.smc.get_secret_value(),
            pan=app.pan.digits,
            psn=f"{app.psn:02d}",
        )
        counters = _Counters(
            atc=app.atc, last_online_atc=app.last_online_atc, pin_tries=app.pin_try_limit
        )
        return _Application(app, engine, build_records(app), counters)

    def __repr__(self) -> str:
        return f"EmvCard({self.profile.name!r})"

    # -- CardApplication --------------------------------------------------------------

    def power_on(self) -> bytes:
        """Cold reset: the session is forgotten, counters are kept. Returns the ATR."""
        self._session = _Session()
        self._injector.power_on()
        self._powered = True
        return self.profile.atr

    def power_off(self) -> None:
        """Contacts released: the session ends (an unfinished transaction stays unfinished)."""
        self._session = _Session()
        self._powered = False

    def process_apdu(self, command: bytes) -> bytes:
        """Answer one command APDU with data and SW1 SW2 (never raises for bad commands)."""
        return self._injector.process(bytes(command), self._process)

    # -- inspection for tests ---------------------------------------------------------

    def atc(self, index: int = 0) -> int:
        """The application transaction counter of application ``index``."""
        return self._apps[index].counters.atc

    def pin_try_counter(self, index: int = 0) -> int:
        """The PIN try counter of application ``index``."""
        return self._apps[index].counters.pin_tries

    # -- dispatch -----------------------------------------------------------------------

    def _process(self, raw: bytes) -> bytes:
        try:
            cmd = parse_command(raw)
            cla = cmd.cla & 0xFC if cmd.cla & 0xF0 in (0x00, 0x80) else cmd.cla  # channel bits
            if cla not in (_ISO, _PROPRIETARY):
                raise CommandError(SW.CLA_NOT_SUPPORTED)
            handler = self._handlers.get((cla, cmd.ins))
            if handler is None:
                if any(ins == cmd.ins for _, ins in self._handlers):
                    raise CommandError(SW.CLA_NOT_SUPPORTED)
                raise CommandError(SW.INS_NOT_SUPPORTED)
            data, sw = handler(cmd)
        except CommandError as exc:
            return response(b"", exc.sw)
        return response(data, sw)

    def _app(self) -> _Application:
        if self._session.current != "app" or self._session.app is None:
            raise CommandError(SW.CONDITIONS_NOT_SATISFIED)
        return self._apps[self._session.app]

    # -- SELECT (Book 1 11.3) -------------------------------------------------------------

    def _select(self, cmd: Command) -> tuple[bytes, int]:
        if cmd.p1 != 0x04 or cmd.p2 not in (0x00, 0x02):
            raise CommandError(SW.WRONG_P1P2)
        name = cmd.data
        if not 1 <= len(name) <= 16:
            raise CommandError(SW.WRONG_LENGTH)
        previous = self._session.app if self._session.current == "app" else None
        self._session = _Session()
        if name == PSE_NAME:
            if not self.profile.pse:
                raise CommandError(SW.FILE_NOT_FOUND)
            self._session.current = "pse"
            return self._pse_fci(), SW.OK
        if name == PPSE_NAME:
            if not self.profile.ppse:
                raise CommandError(SW.FILE_NOT_FOUND)
            self._session.current = "ppse"
            return self._ppse_fci(), SW.OK
        candidates = [
            i
            for i, app in enumerate(self._apps)
            if app.profile.aid == name
            or (
                app.profile.partial_selection
                and len(name) >= 5
                and app.profile.aid.startswith(name)
            )
        ]
        if cmd.p2 == 0x02 and previous is not None:
            candidates = [i for i in candidates if i > previous]
        if not candidates:
            raise CommandError(SW.FILE_NOT_FOUND)
        index = candidates[0]
        self._session.current, self._session.app = "app", index
        app = self._apps[index].profile
        return self._adf_fci(app), SW.SELECTED_FILE_INVALIDATED if app.blocked else SW.OK

    def _pse_fci(self) -> bytes:
        prop = Tlv(0xA5, (Tlv(0x88, bytes((self.profile.directory_sfi,))), self._lang()))
        return _tlv.encode([Tlv(0x6F, (Tlv(0x84, PSE_NAME), prop))])

    def _lang(self) -> Tlv:
        return Tlv(0x5F2D, self._apps[0].profile.language.encode("ascii"))

    def _directory_entry(self, app: ApplicationProfile, *, preferred: bool) -> Tlv:
        items = [Tlv(0x4F, app.aid), Tlv(0x50, app.label.encode("ascii"))]
        if app.priority is not None:
            items.append(Tlv(0x87, bytes((app.priority,))))
        if preferred and app.preferred_name:
            items.append(Tlv(0x9F12, app.preferred_name.encode("ascii")))
        return Tlv(0x61, tuple(items))

    def _ppse_fci(self) -> bytes:
        entries = tuple(self._directory_entry(a.profile, preferred=False) for a in self._apps)
        prop = Tlv(0xA5, (Tlv(0xBF0C, entries),))
        return _tlv.encode([Tlv(0x6F, (Tlv(0x84, PPSE_NAME), prop))])

    @staticmethod
    def _adf_fci(app: ApplicationProfile) -> bytes:
        items = [Tlv(0x50, app.label.encode("ascii"))]
        if app.priority is not None:
            items.append(Tlv(0x87, bytes((app.priority,))))
        if app.pdol:
            items.append(Tlv(0x9F38, app.pdol))
        items.append(Tlv(0x5F2D, app.language.encode("ascii")))
        items.append(Tlv(0x9F11, b"\x01"))
        if app.preferred_name:
            items.append(Tlv(0x9F12, app.preferred_name.encode("ascii")))
        return _tlv.encode([Tlv(0x6F, (Tlv(0x84, app.aid), Tlv(0xA5, tuple(items))))])

    # -- READ RECORD (Book 1 11.2, Book 3 6.5.11) ---------------------------------------

    def _read_record(self, cmd: Command) -> tuple[bytes, int]:
        sfi = cmd.p2 >> 3
        if cmd.p1 == 0 or cmd.p2 & 0x07 != 0x04 or sfi in (0, 31):
            raise CommandError(SW.WRONG_P1P2)
        if cmd.data:
            raise CommandError(SW.WRONG_LENGTH)
        current = self._session.current
        if current == "pse":
            if sfi != self.profile.directory_sfi:
                raise CommandError(SW.FILE_NOT_FOUND)
            if cmd.p1 > len(self._apps):
                raise CommandError(SW.RECORD_NOT_FOUND)
            entry = self._directory_entry(self._apps[cmd.p1 - 1].profile, preferred=True)
            return _tlv.encode([Tlv(0x70, (entry,))]), SW.OK
        if current == "ppse":
            raise CommandError(SW.FILE_NOT_FOUND)
        app = self._app()
        if not any(key[0] == sfi for key in app.records):
            raise CommandError(SW.FILE_NOT_FOUND)
        record = app.records.get((sfi, cmd.p1))
        if record is None:
            raise CommandError(SW.RECORD_NOT_FOUND)
        return record, SW.OK

    # -- GET PROCESSING OPTIONS (Book 3 6.5.8) ----------------------------------------

    def _get_processing_options(self, cmd: Command) -> tuple[bytes, int]:
        if cmd.p1p2 != 0:
            raise CommandError(SW.WRONG_P1P2)
        app = self._app()
        session = self._session
        if app.profile.blocked or session.phase is not _Phase.SELECTED:
            raise CommandError(SW.CONDITIONS_NOT_SATISFIED)
        try:
            objects = _tlv.decode(cmd.data)
        except _tlv.DecodeError:
            raise CommandError(SW.WRONG_DATA) from None
        if len(objects) != 1 or objects[0].tag != 0x83:
            raise CommandError(SW.WRONG_DATA)
        expected = _dol.total_length(app.profile.pdol) if app.profile.pdol else 0
        if len(objects[0].data) != expected:
            raise CommandError(SW.WRONG_LENGTH)
        if app.counters.atc >= 0xFFFF:
            raise CommandError(SW.CONDITIONS_NOT_SATISFIED)
        app.counters.atc += 1
        session.phase = _Phase.GPO_DONE
        aip = app.profile.aip
        afl = b"".join(entry.encode() for entry in app.profile.afl)
        if app.profile.response_format == 1:
            return _tlv.encode([Tlv(0x80, aip + afl)]), SW.OK
        return _tlv.encode([Tlv(0x77, (Tlv(0x82, aip), Tlv(0x94, afl)))]), SW.OK

    # -- GET DATA (Book 3 6.5.7) ----------------------------------------------------------

    def _get_data(self, cmd: Command) -> tuple[bytes, int]:
        app = self._app()
        counters = app.counters
        values = {
            0x9F36: counters.atc.to_bytes(2, "big"),
            0x9F13: counters.last_online_atc.to_bytes(2, "big"),
        }
        if app.profile.offline_pin:
            values[0x9F17] = bytes((counters.pin_tries,))
        if app.profile.log_format:
            values[0x9F4F] = app.profile.log_format
        value = values.get(cmd.p1p2)
        if value is None:
            raise CommandError(SW.REFERENCED_DATA_NOT_FOUND)
        return _tlv.encode([Tlv(cmd.p1p2, value)]), SW.OK

    # -- VERIFY (Book 3 6.5.12) -----------------------------------------------------------

    def _verify(self, cmd: Command) -> tuple[bytes, int]:
        if cmd.p1 != 0:
            raise CommandError(SW.WRONG_P1P2)
        app = self._app()
        if self._session.phase is not _Phase.GPO_DONE:
            raise CommandError(SW.CONDITIONS_NOT_SATISFIED)
        if cmd.p2 == 0x88:
            raise CommandError(SW.FUNCTION_NOT_SUPPORTED)
        if cmd.p2 != 0x80:
            raise CommandError(SW.WRONG_P1P2)
        if not app.profile.offline_pin:
            raise CommandError(SW.REFERENCE_DATA_NOT_USABLE)
        counters = app.counters
        if not cmd.data:
            if counters.pin_tries == 0:
                raise CommandError(SW.AUTH_METHOD_BLOCKED)
            return b"", SW.counter_warning(counters.pin_tries)
        if len(cmd.data) != 8:
            raise CommandError(SW.WRONG_LENGTH)
        offered = _plaintext_pin(cmd.data)
        if offered is None:
            raise CommandError(SW.WRONG_DATA)
        if counters.pin_tries == 0:
            raise CommandError(SW.AUTH_METHOD_BLOCKED)
        self._session.pin_performed = True
        if hmac.compare_digest(offered, app.profile.pin.get_secret_value()):
            counters.pin_tries = app.profile.pin_try_limit
            self._session.pin_failed = False
            return b"", SW.OK
        counters.pin_tries -= 1
        self._session.pin_failed = True
        return b"", SW.counter_warning(counters.pin_tries)

    # -- GET RESPONSE ---------------------------------------------------------------------

    def _get_response(self, cmd: Command) -> tuple[bytes, int]:
        raise CommandError(SW.CONDITIONS_NOT_SATISFIED)  # nothing is ever waiting

    # -- GENERATE AC (Book 3 6.5.5, 9.3) ------------------------------------------------

    def _generate_ac(self, cmd: Command) -> tuple[bytes, int]:
        requested = cmd.p1 & 0xC0
        if cmd.p1 & 0x3F or requested == 0xC0 or cmd.p2 != 0:
            raise CommandError(SW.WRONG_P1P2)
        app = self._app()
        phase = self._session.phase
        if phase is _Phase.GPO_DONE:
            return self._first_ac(app, AcType(requested), cmd.data)
        if phase is _Phase.ARQC_ISSUED:
            if requested == AcType.ARQC:
                raise CommandError(SW.WRONG_P1P2)
            return self._second_ac(app, AcType(requested), cmd.data)
        raise CommandError(SW.CONDITIONS_NOT_SATISFIED)

    def _base_cvr(self, app: _Application, terminal: dict[int, bytes]) -> Cvr:
        c, p = app.counters, app.profile
        country = terminal.get(0x9F1A, b"")
        return Cvr(
            first_ac=AcType.AAC,
            offline_pin_performed=self._session.pin_performed,
            offline_pin_failed=self._session.pin_failed,
            pin_try_limit_exceeded=p.offline_pin and c.pin_tries == 0,
            pin_try_counter=c.pin_tries,
            last_online_not_completed=c.last_online_not_completed,
            issuer_auth_failed_last_online=c.issuer_auth_failed_last,
            new_card=c.last_online_atc == 0,
            velocity_exceeded=c.consecutive_offline >= p.lower_consecutive_offline_limit,
            international=country != profile_tags(p)[0x5F28],
        )

    def _counters_field(self, app: _Application) -> bytes:
        c = app.counters
        amount = bytes.fromhex(f"{min(c.cumulative_offline, 10**12 - 1):012d}")
        return amount + bytes((min(c.consecutive_offline, 255), 0xFF))

    def _answer(
        self, app: _Application, ac_type: AcType, cvr: Cvr, terminal: dict[int, bytes]
    ) -> tuple[bytes, bytes]:
        atc = app.counters.atc.to_bytes(2, "big")
        iad = app.engine.issuer_application_data(cvr, self._counters_field(app))
        cryptogram = app.engine.generate_ac(terminal, app.profile.aip, atc, iad)
        cid = bytes((int(ac_type),))
        if app.profile.response_format == 1:
            body = _tlv.encode([Tlv(0x80, cid + atc + cryptogram + iad)])
        else:
            body = _tlv.encode(
                [
                    Tlv(
                        0x77,
                        (
                            Tlv(0x9F27, cid),
                            Tlv(0x9F36, atc),
                            Tlv(0x9F26, cryptogram),
                            Tlv(0x9F10, iad),
                        ),
                    )
                ]
            )
        return body, cryptogram

    def _first_ac(self, app: _Application, requested: AcType, data: bytes) -> tuple[bytes, int]:
        if len(data) != _dol.total_length(app.profile.cdol1):
            raise CommandError(SW.WRONG_LENGTH)
        terminal = _split(app.profile.cdol1, data)
        base = self._base_cvr(app, terminal)
        decided = requested
        if requested is AcType.TC and (base.go_online or not app.profile.offline_capable):
            decided = AcType.ARQC
        cvr = dataclasses.replace(base, first_ac=decided)
        body, cryptogram = self._answer(app, decided, cvr, terminal)
        c = app.counters
        if decided is AcType.ARQC:
            c.last_online_not_completed = True
            self._session.phase = _Phase.ARQC_ISSUED
            self._session.arqc = cryptogram
            self._session.cdol1 = terminal
        else:
            if decided is AcType.TC:
                c.consecutive_offline += 1
                c.cumulative_offline += _bcd_amount(terminal[0x9F02])
            self._session.phase = _Phase.DONE
        return body, SW.OK

    def _second_ac(self, app: _Application, requested: AcType, data: bytes) -> tuple[bytes, int]:
        if len(data) != _dol.total_length(app.profile.cdol2):
            raise CommandError(SW.WRONG_LENGTH)
        terminal = {**self._session.cdol1, **_split(app.profile.cdol2, data)}
        c = app.counters
        atc = c.atc.to_bytes(2, "big")
        auth_data = terminal.get(0x91, b"")
        performed = any(auth_data)
        ok = performed and app.engine.arpc_ok(self._session.arqc, atc, auth_data)
        decided = requested
        if (performed and not ok) or self.faults.aac_at_second_gen_ac:
            decided = AcType.AAC
        base = self._base_cvr(app, terminal)
        cvr = dataclasses.replace(
            base,
            first_ac=AcType.ARQC,
            second_ac=decided,
            last_online_not_completed=False,
            issuer_auth_performed=performed,
            issuer_auth_failed=performed and not ok,
            issuer_auth_not_performed_after_online=not performed,
            unable_to_go_online=terminal.get(0x8A, b"") in _DECLINED_ONLINE_ARC,
        )
        body, _ = self._answer(app, decided, cvr, terminal)
        c.last_online_not_completed = False
        if performed:
            c.issuer_auth_failed_last = not ok
        if ok:
            c.last_online_atc = c.atc
            c.consecutive_offline = 0
            c.cumulative_offline = 0
        self._session.phase = _Phase.DONE
        return body, SW.OK


def _plaintext_pin(block: bytes) -> str | None:
    """The PIN in an ISO 9564 format 2 block (EMV plaintext offline PIN), or None."""
    digits = block.hex().upper()
    length = int(digits[1], 16)
    if digits[0] != "2" or not 4 <= length <= 12:
        return None
    pin, filler = digits[2 : 2 + length], digits[2 + length :]
    if not pin.isdigit() or filler != "F" * len(filler):
        return None
    return pin
