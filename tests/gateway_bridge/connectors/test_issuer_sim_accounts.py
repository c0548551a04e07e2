"""Loading the simulator's accounts: the card catalogue as data, and the accounts file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway_bridge.connectors.issuer_sim import (
    AccountsError,
    IssuerSimulator,
    load_accounts,
    load_accounts_file,
    load_card_profile,
    load_catalogue,
    repo_catalogue_dir,
)
from gateway_bridge.connectors.issuer_sim.pin import Ibm3624, VisaPvv
from paycore.pan import Pan
from tests.gateway_bridge.connectors.issuer_sim_support import CATALOGUE

KEYS = """
[accounts.keys]
ac = "0123456789ABCDEFFEDCBA9876543210"
smi = "FEDCBA98765432100123456789ABCDEF"
smc = "89ABCDEF0123456776543210FEDCBA98"
"""
PAN = "4000000000000010"


def write(tmp_path: Path, body: str, name: str = "accounts.toml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def account(extra: str = "", keys: str = KEYS, pan: str = PAN) -> str:
    return f"""test_data = true
[[accounts]]
pan = "{pan}"
expiry = 2030-12-31
cvn = 10
currency = "GBP"
balance_minor = 1000
daily_limit_minor = 1000
{extra}
{keys}"""


def test_catalogue_loads_every_application() -> None:
    accounts = load_catalogue(CATALOGUE)
    profiles = sorted(CATALOGUE.glob("*.toml"))
    expected = sum(len(tomllib.loads(p.read_text())["applications"]) for p in profiles)
    assert len(accounts) == expected
    by_id = {a.account_id: a for a in accounts}
    visa = by_id["visa_credit.0"]
    assert (visa.cvn, visa.psn, visa.expiry, visa.currency.alpha) == (18, "01", "3012", "GBP")
    assert (visa.balance, visa.daily_limit, visa.status) == (500_000, 200_000, "active")
    assert isinstance(visa.pin, VisaPvv)  # PVV preferred when both are given
    assert isinstance(by_id["mastercard_credit.0"].pin, Ibm3624)
    assert by_id["blocked_app.0"].status == "blocked"
    assert by_id["expired.0"].status == "closed"
    assert by_id["two_apps_choice.1"].pan == Pan("4111111111111111")
    assert by_id["maestro_debit.0"].currency.alpha == "EUR"
    assert repo_catalogue_dir() == CATALOGUE.resolve()


def test_account_repr_hides_card_data() -> None:
    for acc in load_catalogue(CATALOGUE):
        text = repr(acc) + repr(acc.keys) + repr(acc.pin)
        assert acc.pan.digits not in text
        assert acc.pan.masked in text


def test_profile_without_pvv_value_derives_it_from_the_pin(tmp_path: Path) -> None:
    source = (CATALOGUE / "visa_debit.toml").read_text()
    stripped = source.replace('value = "6051"', "")
    assert stripped != source
    derived = load_card_profile(write(tmp_path, stripped, "visa_debit.toml"))[0]
    original = load_card_profile(CATALOGUE / "visa_debit.toml")[0]
    assert isinstance(derived.pin, VisaPvv)
    assert isinstance(original.pin, VisaPvv)
    assert derived.pin.pvv == original.pin.pvv


def test_accounts_file_with_derived_offset_verifies_the_pin(tmp_path: Path) -> None:
    extra = """pin = "4711"
pin_method = "ibm3624"
[accounts.ibm3624]
pvk = "0A1B2C3D4E5F60718293A4B5C6D7E8F9"
decimalisation_table = "0123456789012345"
validation_start = 4
validation_length = 11
"""
    (acc,) = load_accounts_file(write(tmp_path, account(extra)))
    assert isinstance(acc.pin, Ibm3624)
    assert acc.account_id == "accounts.0"
    assert acc.pin.check(PAN)(bytearray(b"4711"))
    assert not acc.pin.check(PAN)(bytearray(b"4712"))


def test_accounts_file_numeric_currency_and_month_expiry(tmp_path: Path) -> None:
    body = (
        account()
        .replace('currency = "GBP"', "currency = 978")
        .replace("expiry = 2030-12-31", 'expiry = "2031-02"')
    )
    (acc,) = load_accounts_file(write(tmp_path, body))
    assert (acc.currency.alpha, acc.expiry, acc.pin) == ("EUR", "3102", None)


BAD = [
    ("no flag", lambda b: b.replace("test_data = true", ""), "test_data"),
    ("unknown key", lambda b: b.replace("cvn = 10", "cvn = 10\ncolour = 1"), "accounts[0].colour"),
    ("bad cvn", lambda b: b.replace("cvn = 10", "cvn = 99"), "accounts[0].cvn"),
    ("bad luhn", lambda b: b.replace(PAN, "4000000000000011"), "accounts[0].pan"),
    (
        "string int",
        lambda b: b.replace("balance_minor = 1000", 'balance_minor = "1000"'),
        "balance_minor",
    ),
    ("currency", lambda b: b.replace('"GBP"', '"XXX"'), "accounts[0].currency"),
    (
        "short key",
        lambda b: b.replace('ac = "0123456789ABCDEFFEDCBA9876543210"', 'ac = "0123"'),
        "keys.ac",
    ),
    (
        "pvv mismatch",
        lambda b: (
            b
            + '\n[accounts.pvv]\npvk = "A7F2C3D4E5B60718293A4B5C6D7E8F90"\n'
            + 'pvki = 1\nvalue = "0000"\n'
        ),
        "accounts[0].pvv.value",
    ),
    (
        "pvv without value or pin",
        lambda b: (
            b.replace('pin = "1234"', "")
            + '\n[accounts.pvv]\npvk = "A7F2C3D4E5B60718293A4B5C6D7E8F90"\npvki = 1\n'
        ),
        "accounts[0].pvv",
    ),
    (
        "method without table",
        lambda b: b.replace('pin = "1234"', 'pin_method = "ibm3624"'),
        "accounts[0]",
    ),
]


@pytest.mark.parametrize(("name", "change", "field"), BAD, ids=[b[0] for b in BAD])
def test_accounts_file_errors_name_file_and_field(
    tmp_path: Path, name: str, change: object, field: str
) -> None:
    body = change(account('pin = "1234"'))  # type: ignore[operator]
    path = write(tmp_path, body)
    with pytest.raises(AccountsError) as info:
        load_accounts_file(path)
    message = str(info.value)
    assert str(path) in message
    assert info.value.field is not None
    assert field in info.value.field
    assert PAN not in message
    assert "1234" not in message.replace(str(path), "")


def test_not_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "test_data = = true")
    with pytest.raises(AccountsError, match="not valid TOML"):
        load_accounts([path])


def test_unknown_document(tmp_path: Path) -> None:
    with pytest.raises(AccountsError, match=r"neither \[\[accounts\]\]"):
        load_accounts([write(tmp_path, "test_data = true\n")])


def test_duplicate_pan_across_sources(tmp_path: Path) -> None:
    visa_pan = "4761739001010010"
    path = write(tmp_path, account(pan=visa_pan))
    with pytest.raises(AccountsError, match=r"has the PAN of visa_credit\.0") as info:
        load_accounts([CATALOGUE, path])
    assert visa_pan not in str(info.value)
    with pytest.raises(AccountsError):
        IssuerSimulator(load_catalogue(CATALOGUE) + load_accounts_file(path))


def test_missing_catalogue_directory(tmp_path: Path) -> None:
    with pytest.raises(AccountsError, match="not a directory"):
        load_catalogue(tmp_path / "nowhere")


def test_from_paths_mixes_sources(tmp_path: Path) -> None:
    sim = IssuerSimulator.from_paths([CATALOGUE / "visa_credit.toml", write(tmp_path, account())])
    assert sorted(s.account_id for s in sim.snapshots()) == ["accounts.0", "visa_credit.0"]
    assert sim.snapshot("accounts.0").masked_pan == Pan(PAN).masked
    with pytest.raises(KeyError):
        sim.snapshot("nope")
