"""Key files: 0600, atomic, never overwritten, optional scrypt + AES-GCM encryption."""

from __future__ import annotations

import json
import stat

import pytest

from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.keystore import Keystore
from hashcloud.errors import KeystoreError


def test_create_is_0600_and_loads(tmp_path):
    ks = Keystore(tmp_path)
    info = ks.create("default", PrivateKey(42))
    mode = stat.S_IMODE(info.path.stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(ks.directory.stat().st_mode) == 0o700
    assert ks.load("default") == PrivateKey(42)
    assert not list(ks.directory.glob(".*.tmp"))


def test_never_overwrites(tmp_path):
    ks = Keystore(tmp_path)
    ks.create("k", PrivateKey(1))
    before = ks.path_for("k").read_bytes()
    with pytest.raises(KeystoreError, match="already exists"):
        ks.create("k", PrivateKey(2))
    assert ks.path_for("k").read_bytes() == before


def test_encrypted_round_trip_and_wrong_passphrase(tmp_path):
    ks = Keystore(tmp_path)
    info = ks.create("enc", PrivateKey(99), passphrase="correct horse")
    raw = info.path.read_text()
    assert "private_key" not in json.loads(raw)
    assert format(99, "064x") not in raw
    assert ks.load("enc", "correct horse") == PrivateKey(99)
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        ks.load("enc", "wrong")
    with pytest.raises(KeystoreError, match="passphrase is needed"):
        ks.load("enc")


def test_damaged_files_are_clear_errors(tmp_path):
    ks = Keystore(tmp_path)
    ks.create("a", PrivateKey(3))
    p = ks.path_for("a")
    p.write_text("{not json")
    with pytest.raises(KeystoreError, match="unreadable"):
        ks.load("a")
    p.write_text(json.dumps({"version": 1, "address": "cpc1x", "private_key": "00" * 32}))
    with pytest.raises(KeystoreError, match="damaged"):
        ks.load("a")
    other = PrivateKey(4).public_key.address
    p.write_text(json.dumps({"version": 1, "address": other, "private_key": format(3, "064x")}))
    with pytest.raises(KeystoreError, match="does not match"):
        ks.load("a")
    with pytest.raises(KeystoreError, match="no key named"):
        ks.load("missing")


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 65])
def test_bad_names(tmp_path, name):
    with pytest.raises(KeystoreError):
        Keystore(tmp_path).create(name)


def test_list(tmp_path):
    ks = Keystore(tmp_path)
    assert ks.list() == []
    ks.create("b", PrivateKey(2))
    ks.create("a", PrivateKey(1), passphrase="pw")
    names = [(k.name, k.encrypted) for k in ks.list()]
    assert names == [("a", True), ("b", False)]


def _encrypted_record(tmp_path) -> tuple[Keystore, dict]:
    ks = Keystore(tmp_path)
    info = ks.create("enc", PrivateKey(7), passphrase="pw")
    return ks, json.loads(info.path.read_text())


def _crypto(record: dict, **changes: object) -> dict:
    crypto = dict(record["crypto"])
    for field, value in changes.items():
        if value is _DROP:
            del crypto[field]
        else:
            crypto[field] = value
    return {**record, "crypto": crypto}


_DROP = object()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: {**r, "crypto": "x"},
        lambda r: {**r, "crypto": ["scrypt"]},
        lambda r: {**r, "crypto": None},
        lambda r: {k: v for k, v in r.items() if k != "address"},
        lambda r: {**r, "address": 5},
        lambda r: _crypto(r, salt=_DROP),
        lambda r: _crypto(r, salt=12),
        lambda r: _crypto(r, salt="zz"),
        lambda r: _crypto(r, nonce="00"),
        lambda r: _crypto(r, ciphertext=None),
        lambda r: _crypto(r, ciphertext="00" * 48),
        lambda r: _crypto(r, n="32768"),
        lambda r: _crypto(r, n=3),
        lambda r: _crypto(r, n=2**40),
        lambda r: _crypto(r, n=True),
        lambda r: _crypto(r, r=_DROP),
        lambda r: _crypto(r, r=2**15, n=2**20),
        lambda r: _crypto(r, p=[1]),
        lambda r: _crypto(r, kdf=["scrypt"]),
    ],
)
def test_malformed_encrypted_key_files_raise_keystore_error(tmp_path, mutate):
    ks, record = _encrypted_record(tmp_path)
    ks.path_for("enc").write_text(json.dumps(mutate(record)))
    with pytest.raises(KeystoreError, match=r"damaged|unknown cipher|wrong passphrase") as info:
        ks.load("enc", "pw")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        "[1, 2]",
        '"a string"',
        "null",
        json.dumps({"version": 1}),
        json.dumps({"version": 1, "address": PrivateKey(3).public_key.address}),
        json.dumps({"version": 1, "address": PrivateKey(3).public_key.address,
                    "private_key": 3}),
        json.dumps({"version": 1, "address": PrivateKey(3).public_key.address,
                    "private_key": {"hex": "03"}}),
        json.dumps({"version": 1, "address": ["cpc1"], "private_key": format(3, "064x")}),
        json.dumps({"version": "1", "private_key": format(3, "064x")}),
    ],
)
def test_malformed_plain_key_files_raise_keystore_error(tmp_path, content):
    ks = Keystore(tmp_path)
    ks.create("a", PrivateKey(3))
    ks.path_for("a").write_text(content)
    with pytest.raises(KeystoreError, match=r"damaged|not a version-1"):
        ks.load("a")
    assert ks.list()[0].error  # listed with the problem, not hidden


def test_malformed_crypto_section_is_reported_before_asking_a_passphrase(tmp_path):
    ks, record = _encrypted_record(tmp_path)
    assert ks.is_encrypted("enc")
    ks.path_for("enc").write_text(json.dumps({**record, "crypto": "x"}))
    assert not ks.is_encrypted("enc")
    with pytest.raises(KeystoreError, match="damaged: 'crypto' is not an object"):
        ks.load("enc")
