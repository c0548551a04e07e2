"""The card catalogue: every profile loads, reads like a card and signs verifiable ARQCs.

Holds the small terminal-side driver (selection, GPO, READ RECORD, first GENERATE AC)
and the issuer-side checks written with pyemv straight from a profile's issuer master
keys, so the card code is never used to check itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psec
import pyemv
import pytest

from hardware.cards import (
    PSE_NAME,
    SW,
    ApplicationProfile,
    EmvCard,
    InProcessTransport,
    ProfileError,
    catalogue,
    load_profile,
    load_profile_file,
)
from hardware.cards.profile import CATALOGUE_DIR
from paycore import dol, tlv
from paycore.pan import luhn_valid
from tests.vectors import load

TERMINAL_AIDS = [
    bytes.fromhex("A0000000031010"),
    bytes.fromhex("A0000000032010"),
    bytes.fromhex("A0000000041010"),
    bytes.fromhex("A0000000043060"),
]
REQUIRED = {
    "visa_credit",
    "visa_debit",
    "mastercard_credit",
    "maestro_debit",
    "two_apps_choice",
    "expired",
    "no_pse",
    "blocked_app",
    "signature_card",
    "offline_pin_card",
}


def terminal_data(**overrides: bytes) -> dict[int, bytes]:
    """The terminal's side of a purchase of 12.34 in GBP, as a DOL source."""
    data = {
        0x9F02: bytes.fromhex("000000001234"),
        0x9F03: bytes(6),
        0x9F1A: bytes.fromhex("0826"),
        0x95: bytes.fromhex("0000008000"),
        0x5F2A: bytes.fromhex("0826"),
        0x9A: bytes.fromhex("250614"),
        0x9C: b"\x00",
        0x9F37: bytes.fromhex("1A2B3C4D"),
        0x9F35: b"\x22",
        0x9F34: bytes.fromhex("420300"),
        0x9F21: bytes.fromhex("101500"),
        0x8A: b"00",
    }
    for name, value in overrides.items():
        data[int(name.removeprefix("t"), 16)] = value
    return data


def apdu(header: str, data: bytes = b"", le: int | None = 0) -> bytes:
    """A short command APDU from a hex header, data and Le."""
    raw = bytes.fromhex(header)
    if data:
        raw += bytes((len(data),)) + data
    if le is not None:
        raw += bytes((le,))
    return raw


def split_ac_response(data: bytes) -> tuple[int, bytes, bytes, bytes]:
    """CID, ATC, cryptogram and IAD from a GENERATE AC answer (format 1 or 2)."""
    objects = tlv.decode(data)
    if objects[0].tag == 0x80:
        v = objects[0].data
        return v[0], v[1:3], v[3:11], v[11:]
    flat = tlv.flatten(objects)
    return flat[0x9F27][0], flat[0x9F36], flat[0x9F26], flat[0x9F10]


def _pyemv_cvn(app: ApplicationProfile) -> object:
    keys = (
        app.keys.ac.get_secret_value(),
        app.keys.smi.get_secret_value(),
        app.keys.smc.get_secret_value(),
    )
    classes = {
        10: pyemv.cvn.VisaCVN10,
        18: pyemv.cvn.VisaCVN18,
        16: pyemv.cvn.MasterCardCVN16,
        17: pyemv.cvn.MasterCardCVN17,
        20: pyemv.cvn.MasterCardCVN20,
        21: pyemv.cvn.MasterCardCVN21,
    }
    return classes[app.cvn](*keys, pan=app.pan.digits, psn=f"{app.psn:02d}")


def expected_cryptogram(
    app: ApplicationProfile, cdol_values: dict[int, bytes], atc: bytes, iad: bytes
) -> bytes:
    """The issuer's view: the cryptogram pyemv computes from the IMK and the sent data."""
    impl = _pyemv_cvn(app)
    icc_mk = pyemv.kd.derive_icc_mk_a(
        app.keys.ac.get_secret_value(), app.pan.digits, f"{app.psn:02d}"
    )
    assert impl.icc_mk_ac == icc_mk  # type: ignore[attr-defined]
    args = {
        "tag_9f02": cdol_values[0x9F02],
        "tag_9f03": cdol_values[0x9F03],
        "tag_9f1a": cdol_values[0x9F1A],
        "tag_95": cdol_values[0x95],
        "tag_5f2a": cdol_values[0x5F2A],
        "tag_9a": cdol_values[0x9A],
        "tag_9c": cdol_values[0x9C],
        "tag_9f37": cdol_values[0x9F37],
        "tag_82": app.aip,
        "tag_9f36": atc,
    }
    if app.cvn == 10:
        args["cvr"] = iad[3:7]
    elif app.cvn == 18:
        args["tag_9f10"] = iad
    elif app.cvn in (16, 20):
        args["cvr"] = iad[2:8]
    else:
        args["cvr"], args["counters"] = iad[2:8], iad[10:18]
    result: bytes = impl.generate_ac(**args)  # type: ignore[attr-defined]
    return result


def issuer_auth_data(
    app: ApplicationProfile, arqc: bytes, atc: bytes, *, approve: bool = True
) -> bytes:
    """Tag 91 as the issuer would send it: the ARPC computed with pyemv from the IMK."""
    impl = _pyemv_cvn(app)
    if app.cvn == 18:
        csu = bytes.fromhex("00800000" if approve else "00000000")
        arpc: bytes = impl.generate_arpc(arqc, atc, csu)  # type: ignore[attr-defined]
        return arpc + csu
    arc = b"00" if approve else b"05"
    if app.cvn in (20, 21):
        arpc = impl.generate_arpc(arqc, atc, arc)  # type: ignore[attr-defined]
    else:
        arpc = impl.generate_arpc(arqc, arc)  # type: ignore[attr-defined]
    return arpc + arc


def dol_values(dol_bytes: bytes, data: bytes) -> dict[int, bytes]:
    """Split DOL-built command data back into values, by tag."""
    out: dict[int, bytes] = {}
    pos = 0
    for entry in dol.parse(dol_bytes):
        out[entry.tag] = data[pos : pos + entry.length]
        pos += entry.length
    return out


@dataclass
class ReadResult:
    """What the driver learnt from one application."""

    aid: bytes
    fci: list[tlv.Tlv]
    card_data: dict[int, bytes] = field(default_factory=dict)
    cdol1_data: bytes = b""
    ac_answer: bytes = b""


class Transport(Protocol):
    def transmit(self, apdu: bytes) -> tuple[bytes, int, int]: ...


class ContactDriver:
    """A minimal terminal: enough of Book 1 and Book 3 to read a card and ask for an ARQC."""

    def __init__(self, transport: Transport) -> None:
        self.t = transport

    def send(self, raw: bytes) -> tuple[bytes, int]:
        data, sw1, sw2 = self.t.transmit(raw)
        return data, sw1 << 8 | sw2

    def candidates(self) -> list[bytes]:
        """Book 1 12.3: the PSE directory if there is one, else the terminal's AID list."""
        data, sw = self.send(apdu("00A40400", PSE_NAME))
        if sw == SW.OK:
            sfi = tlv.flatten(tlv.decode(data))[0x88][0]
            found = []
            for number in range(1, 32):
                record, sw = self.send(apdu(f"00B2{number:02X}{sfi << 3 | 4:02X}"))
                if sw == SW.RECORD_NOT_FOUND:
                    break
                assert sw == SW.OK
                found += [e.data for e in tlv.find_all(tlv.decode(record), 0x4F)]
            return found
        assert sw == SW.FILE_NOT_FOUND
        found = []
        for aid in TERMINAL_AIDS:
            fci, sw = self.send(apdu("00A40400", aid))
            if sw in (SW.OK, SW.SELECTED_FILE_INVALIDATED):
                found.append(tlv.flatten(tlv.decode(fci))[0x84])
        return found

    def read_application(self, aid: bytes, source: dict[int, bytes]) -> ReadResult:
        """Select, GPO with the PDOL, read the AFL, first GENERATE AC asking for an ARQC."""
        fci, sw = self.send(apdu("00A40400", aid))
        assert sw == SW.OK
        result = ReadResult(aid, tlv.decode(fci))
        pdol = tlv.flatten(result.fci).get(0x9F38, b"")
        gpo_data = tlv.encode([tlv.Tlv(0x83, dol.build(pdol, source))])
        answer, sw = self.send(apdu("80A80000", gpo_data))
        assert sw == SW.OK
        objects = tlv.decode(answer)
        if objects[0].tag == 0x80:
            aip, afl = objects[0].data[:2], objects[0].data[2:]
        else:
            flat = tlv.flatten(objects)
            aip, afl = flat[0x82], flat[0x94]
        result.card_data[0x82] = aip
        for i in range(0, len(afl), 4):
            sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
            for number in range(first, last + 1):
                record, sw = self.send(apdu(f"00B2{number:02X}{sfi << 3 | 4:02X}"))
                assert sw == SW.OK
                objs = tlv.decode(record)
                assert objs[0].tag == 0x70
                for tag, value in tlv.flatten(objs).items():
                    result.card_data.setdefault(tag, value)
        result.cdol1_data = dol.build(result.card_data[0x8C], {**source, **result.card_data})
        result.ac_answer, sw = self.send(apdu("80AE8000", result.cdol1_data))
        assert sw == SW.OK
        return result


def test_catalogue_has_the_required_profiles() -> None:
    names = catalogue()
    assert len(names) >= 10
    assert set(names) >= REQUIRED


@pytest.mark.parametrize("name", catalogue())
def test_every_profile_loads_with_test_data(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name and profile.test_data is True
    known = {entry["pan"] for entry in load("luhn_test_pans")["test_pans"]}
    for app in profile.applications:
        assert luhn_valid(app.pan.digits)
        assert app.pan.digits in known  # brand test PANs only
        assert app.pan.digits not in repr(profile)
        pin = app.pin.get_secret_value()
        issuer = app.issuer
        assert issuer.pvv is not None or issuer.ibm3624 is not None
        if issuer.pvv is not None:
            pvk = issuer.pvv.pvk.get_secret_value()
            assert (
                psec.pin.generate_visa_pvv(pvk, str(issuer.pvv.pvki), pin, app.pan.digits)
                == issuer.pvv.value
            )
        if issuer.ibm3624 is not None:
            ibm = issuer.ibm3624
            natural = psec.pin.generate_ibm3624_pin(
                ibm.pvk.get_secret_value(),
                ibm.decimalisation_table,
                ibm.offset,
                app.pan.digits,
                ibm.validation_start,
                ibm.validation_length,
                ibm.pad,
            )
            assert natural == pin


def test_profiles_carry_their_personality() -> None:
    today = dt.date(2025, 6, 14)
    assert load_profile("expired").applications[0].expiry < today
    assert all(
        p.expiry > today for n in REQUIRED - {"expired"} for p in load_profile(n).applications
    )
    assert not load_profile("no_pse").pse and not load_profile("no_pse").ppse
    assert load_profile("blocked_app").applications[0].blocked
    two = load_profile("two_apps_choice").applications
    assert len(two) == 2 and all(a.priority is not None and a.priority & 0x80 for a in two)
    assert load_profile("offline_pin_card").applications[0].offline_pin
    cvm_codes = {n: load_profile(n).applications[0].cvm_list[8] & 0x3F for n in REQUIRED}
    assert cvm_codes["signature_card"] == 0x1E
    assert cvm_codes["offline_pin_card"] == 0x01
    assert cvm_codes["maestro_debit"] == 0x02 and cvm_codes["visa_credit"] == 0x02
    assert load_profile("maestro_debit").applications[0].cvm_list[8] & 0x40 == 0  # required
    assert {load_profile(n).applications[0].cvn for n in REQUIRED} >= {10, 16, 17, 18}


@pytest.mark.parametrize("name", catalogue())
def test_contact_read_and_verifiable_arqc(name: str) -> None:
    profile = load_profile(name)
    driver = ContactDriver(InProcessTransport(EmvCard(profile)))
    aids = driver.candidates()
    assert aids == [app.aid for app in profile.applications]
    for app in profile.applications:
        if app.blocked:
            _, sw = driver.send(apdu("00A40400", app.aid))
            assert sw == SW.SELECTED_FILE_INVALIDATED
            _, sw = driver.send(apdu("80A80000", bytes.fromhex("8300")))
            assert sw == SW.CONDITIONS_NOT_SATISFIED
            continue
        source = terminal_data()
        result = driver.read_application(app.aid, source)
        for tag in (0x5A, 0x5F24, 0x8C, 0x8D, 0x57, 0x8E):
            assert tag in result.card_data
        assert result.card_data[0x5A].hex().rstrip("f") == app.pan.digits
        cid, atc, arqc, iad = split_ac_response(result.ac_answer)
        assert cid == 0x80
        assert int.from_bytes(atc, "big") == app.atc + 1
        values = dol_values(app.cdol1, result.cdol1_data)
        assert arqc == expected_cryptogram(app, values, atc, iad)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "field_named"),
    [
        ("cvn = 18", "cvn = 99", "applications.0"),
        ('aip = "1C00"', 'aip = "1CZZ"', "applications.0.aip"),
        ("test_data = true\n", "", "test_data"),
        ('cdol1 = "9F0206', 'cdol1 = "9F0306', "cdol1"),
        ("last = 2", "last = 3", "afl"),
        ('pan = "4761739001010010"', 'pan = "4761739001010011"', "applications.0.pan"),
        ("psn = 1", 'psn = "01"', "applications.0.psn"),
    ],
)
def test_bad_profile_file_gives_clear_error(
    tmp_path: Path, old: str, new: str, field_named: str
) -> None:
    text = (CATALOGUE_DIR / "visa_credit.toml").read_text(encoding="utf-8")
    assert old in text
    path = _write(tmp_path, "broken_card", text.replace(old, new, 1))
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    message = str(info.value)
    assert message.startswith("broken_card.toml:")
    assert field_named in message
    assert "4761739001010010" not in message and "476173900101001" not in message


def test_not_toml_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"^junk\.toml: not valid TOML"):
        load_profile_file(_write(tmp_path, "junk", "this is = = not toml"))
    with pytest.raises(ProfileError, match="not in the card catalogue"):
        load_profile("no_such_card")
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile_file(tmp_path / "missing.toml")
