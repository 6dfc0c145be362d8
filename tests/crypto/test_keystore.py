"""Key files: 0600, atomic, never overwritten, optional scrypt + AES-GCM encryption."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.keystore import Keystore
from hashcloud.errors import KeyFileExposed, KeystoreError


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


# ------------------------------------------------------------- issue 11 item 7: key files

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes only")


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602, 0o620, 0o700, 0o777])
@pytest.mark.parametrize("encrypted", [False, True])
def test_key_file_others_may_access_is_refused(tmp_path, mode, encrypted):
    ks = Keystore(tmp_path)
    path = ks.create("k", PrivateKey(5), passphrase="pw" if encrypted else None).path
    path.chmod(mode)
    if mode & 0o077:
        message = f"permissions {mode:04o} for key file {path} are too open"
        with pytest.raises(KeyFileExposed, match=re.escape(message)):
            ks.load("k", "pw")
        with pytest.raises(KeyFileExposed, match="chmod 600"):
            ks.is_encrypted("k")  # refused before any passphrase is asked for
        assert "too open" in ks.list()[0].error
        path.chmod(0o600)
    assert ks.load("k", "pw") == PrivateKey(5)  # fixed (or owner-only): usable again
    assert ks.list()[0].error is None


@posix_only
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="only root can give a file to another user")
def test_key_file_owned_by_another_user_is_refused(tmp_path):
    ks = Keystore(tmp_path)
    path = ks.create("k", PrivateKey(5)).path
    os.chown(path, 65534, -1)  # nobody; mode stays 0600
    with pytest.raises(KeyFileExposed, match="owned by uid 65534, not by you"):
        ks.load("k")
    os.chown(path, os.geteuid(), -1)
    assert ks.load("k") == PrivateKey(5)


def _flip(hex_text: str, byte: int) -> str:
    data = bytearray(bytes.fromhex(hex_text))
    data[byte] ^= 0x01
    return data.hex()


@pytest.mark.parametrize("byte", [0, 17, 31, 32, 47])  # secret bytes and GCM tag bytes
def test_flipped_ciphertext_bit_is_wrong_passphrase_or_damage(tmp_path, byte):
    ks, record = _encrypted_record(tmp_path)
    flipped = _crypto(record, ciphertext=_flip(record["crypto"]["ciphertext"], byte))
    ks.path_for("enc").write_text(json.dumps(flipped))
    with pytest.raises(KeystoreError, match="wrong passphrase or damaged key file"):
        ks.load("enc", "pw")


def test_changed_address_field_is_wrong_passphrase_or_damage(tmp_path):
    ks, record = _encrypted_record(tmp_path)
    other = PrivateKey(8).public_key
    ks.path_for("enc").write_text(json.dumps(
        {**record, "address": other.address, "public_key": other.hex()}))
    with pytest.raises(KeystoreError, match="wrong passphrase or damaged key file"):
        ks.load("enc", "pw")


def _encrypt_as(secret: PrivateKey, address: str, passphrase: str) -> dict:
    """A crypto section holding `secret` authenticated under `address` (default KDF)."""
    salt, nonce = os.urandom(16), os.urandom(12)
    kdf = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1)
    box = AESGCM(kdf.derive(passphrase.encode())).encrypt(nonce, secret.to_bytes(),
                                                         address.encode())
    return {"kdf": "scrypt", "n": 2**15, "r": 8, "p": 1, "salt": salt.hex(),
            "cipher": "aes-256-gcm", "nonce": nonce.hex(), "ciphertext": box.hex()}


def test_address_is_checked_after_decryption(tmp_path):
    """A file that decrypts (its AAD is its address) but holds another key is damaged."""
    ks, record = _encrypted_record(tmp_path)
    named = record["address"]
    ks.path_for("enc").write_text(json.dumps(
        {**record, "crypto": _encrypt_as(PrivateKey(9), named, "pw")}))
    with pytest.raises(KeystoreError, match="damaged: address does not match the key"):
        ks.load("enc", "pw")


def test_public_key_field_is_checked_against_the_key(tmp_path):
    ks = Keystore(tmp_path)
    path = ks.create("a", PrivateKey(3)).path
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "public_key": PrivateKey(4).public_key.hex()}))
    with pytest.raises(KeystoreError, match="damaged: public_key does not match"):
        ks.load("a")


@pytest.mark.parametrize("crypto", [[1], [], 1, "scrypt", True])
def test_crypto_of_the_wrong_shape_is_damage_not_a_crash(tmp_path, crypto):
    ks, record = _encrypted_record(tmp_path)
    ks.path_for("enc").write_text(json.dumps({**record, "crypto": crypto}))
    assert not ks.is_encrypted("enc")
    with pytest.raises(KeystoreError, match="damaged: 'crypto' is not an object"):
        ks.load("enc", "pw")
    [info] = ks.list()
    assert "'crypto' is not an object" in info.error


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({"n": 2**20, "r": 16}, "MiB"),  # 2 GiB of scrypt memory
        ({"n": 2**21}, r"\[2, 1048576\]"),
        ({"n": 2**18, "r": 8, "p": 16}, "work bound"),  # 128 times the default's time
        ({"n": 2**15, "r": 8, "p": 17}, r"\[1, 16\]"),
        ({"r": 0}, r"\[1, 16\]"),
        ({"p": 0}, r"\[1, 16\]"),
        ({"salt": "00" * 4}, "'salt' must be 16-64 bytes"),
        ({"ciphertext": "00" * 47}, "'ciphertext' must be 48 bytes"),
        ({"nonce": "00" * 16}, "'nonce' must be 12 bytes"),
    ],
)
def test_absurd_kdf_parameters_are_refused_before_deriving(tmp_path, changes, reason):
    ks, record = _encrypted_record(tmp_path)
    ks.path_for("enc").write_text(json.dumps(_crypto(record, **changes)))
    with pytest.raises(KeystoreError, match=f"damaged: .*{reason}"):
        ks.load("enc", "pw")
