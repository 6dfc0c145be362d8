"""Key files under the HashCloud home (`<home>/keys/<name>.json`, SPEC 7 `keygen`).

Files are created with mode 0600 atomically by `hashcloud.fsutil.create_exclusive`: the
content is written to a fresh temporary file opened with O_CREAT|O_EXCL and mode 0600 (never
readable by others, not even for an instant), fsynced, then hard-linked to its final name.
`link` fails if the name exists, so an existing key is never overwritten, even by a
concurrent writer.

A key file is plaintext JSON by default (protected by 0600 only) or, with a passphrase,
encrypted with scrypt (N=2^15, r=8, p=1) and AES-256-GCM from `cryptography`, the address
being the authenticated associated data.

Reading is as strict as writing: on POSIX a key file that group or others may access, or
that another user owns, is refused before it is read (`check_key_file_access`, as ssh
refuses an unprotected private key); the scrypt parameters a file names are bounded before
anything is derived; every malformed file is a `KeystoreError` naming the file and the
problem; a decryption failure is "wrong passphrase or damaged key file" (AES-GCM cannot
tell the two apart); and the decrypted key must match the file's address and public key.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hashcloud.crypto.keys import PrivateKey, PublicKey
from hashcloud.errors import HashCloudError, KeyFileExposed, KeystoreError
from hashcloud.fsutil import create_exclusive
from hashcloud.params import DEFAULT_KEY_NAME

KEYFILE_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
# Bounds on the KDF parameters a key file may name: a damaged or hostile file must not make
# `load` allocate gigabytes or spin for hours (scrypt memory is 128 * n * r bytes).
_SCRYPT_MAX_N, _SCRYPT_MAX_R, _SCRYPT_MAX_P = 2**20, 16, 16
_SCRYPT_MAX_MEMORY = 256 * 2**20
_SCRYPT_MAX_WORK = 2**22  # n * r * p: 16 times the default's cost (time grows with it)
_SALT_BYTES = (16, 64)
_CIPHERTEXT_BYTES = 32 + 16  # the 32-byte secret and the GCM tag
_POSIX_MODES = os.name == "posix"


class _Damaged(ValueError):
    """A malformed field of a key file; `Keystore.load` turns it into `KeystoreError`."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Public facts about a stored key: name, address, public key, file path, encryption."""

    name: str
    address: str
    public_key: str
    path: Path
    encrypted: bool
    error: str | None = None


def check_key_name(name: str) -> str:
    """Return `name` if it is a safe key name (letters, digits, `_.-`, at most 64 chars)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeystoreError(
            "key name must be 1-64 characters of letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return name


def check_key_file_access(path: Path) -> None:
    """Refuse (KeyFileExposed) a key file that group or others may access or that another
    user owns, as ssh refuses an unprotected private key; a no-op on platforms without
    POSIX modes. The key is never read from such a file: fix it with `chmod 600` (and
    `chown`), or move the key to a new file with `keygen --import -`."""
    if not _POSIX_MODES:  # pragma: no cover - Windows has no POSIX modes
        return
    try:
        info = path.stat()
    except OSError:
        return  # missing or unreadable: the read that follows says so
    owner = os.geteuid()
    if info.st_uid != owner:
        raise KeyFileExposed(
            f"key file {path} is owned by uid {info.st_uid}, not by you (uid {owner}): "
            "refusing to use a key another user controls")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise KeyFileExposed(
            f"permissions {mode:04o} for key file {path} are too open: a private key must "
            f"not be accessible by group or others; run `chmod 600 {path}`")


def _derive(passphrase: str, salt: bytes) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return kdf.derive(passphrase.encode("utf-8"))


class Keystore:
    """The key files of one HashCloud home directory."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.directory = self.home / "keys"

    def path_for(self, name: str) -> Path:
        """Path of the key file called `name` (validated)."""
        return self.directory / f"{check_key_name(name)}.json"

    def exists(self, name: str) -> bool:
        """True if a key file called `name` exists."""
        return self.path_for(name).exists()

    def create(
        self, name: str, key: PrivateKey | None = None, passphrase: str | None = None
    ) -> KeyInfo:
        """Store `key` (or a fresh one) as `name`; refuse if the name is taken."""
        path = self.path_for(name)
        if path.exists():
            raise KeystoreError(f"key {name!r} already exists at {path}; refusing to overwrite")
        key = key or PrivateKey.generate()
        pub = key.public_key
        record: dict[str, object] = {
            "version": KEYFILE_VERSION,
            "address": pub.address,
            "public_key": pub.hex(),
        }
        if passphrase:
            salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
            box = AESGCM(_derive(passphrase, salt)).encrypt(
                nonce, key.to_bytes(), pub.address.encode()
            )
            record["crypto"] = {
                "kdf": "scrypt", "n": _SCRYPT_N, "r": _SCRYPT_R, "p": _SCRYPT_P,
                "salt": salt.hex(), "cipher": "aes-256-gcm", "nonce": nonce.hex(),
                "ciphertext": box.hex(),
            }
        else:
            record["private_key"] = key.hex()
        self._write_new(path, (json.dumps(record, indent=2) + "\n").encode())
        return KeyInfo(name, pub.address, pub.hex(), path, bool(passphrase))

    def _write_new(self, path: Path, data: bytes) -> None:
        """Create `path` with `data`, mode 0600, atomically and without overwriting.

        `fsutil.create_exclusive` links a fully written, fsynced temp file to the name, so
        an existing key (even one a concurrent writer just created) is never replaced."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            create_exclusive(path, data, mode=0o600)
        except FileExistsError:
            raise KeystoreError(
                f"key file {path} already exists; refusing to overwrite"
            ) from None

    def _read(self, name: str, *, check_access: bool = True) -> dict:
        """The JSON object of key file `name`, refused first if others may access it."""
        path = self.path_for(name)
        if check_access:
            check_key_file_access(path)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise KeystoreError(
                f"no key named {name!r} in {self.directory} (run `hashcloud keygen`)"
            ) from None
        except (OSError, ValueError, RecursionError) as exc:
            raise KeystoreError(f"key file {path} is unreadable: {exc}") from None
        if not isinstance(record, dict) or record.get("version") != KEYFILE_VERSION:
            raise KeystoreError(f"key file {path} is not a version-1 HashCloud key")
        return record

    def is_encrypted(self, name: str) -> bool:
        """True if the key file `name` needs a passphrase (it has a `crypto` object).

        A file whose `crypto` section is not an object is damaged, not encrypted: `load`
        reports it without asking for a passphrase first."""
        return isinstance(self._read(name).get("crypto"), dict)

    def load(self, name: str = DEFAULT_KEY_NAME, passphrase: str | None = None) -> PrivateKey:
        """Load and check the private key `name`, decrypting it with `passphrase` if needed.

        Every malformed key file (a `crypto` section that is not an object, missing or
        mistyped fields, bad hex, out-of-range KDF parameters, a key that does not match
        its address or public key) raises `KeystoreError` naming the file and the problem;
        a file others may access is refused first (`KeyFileExposed`), and a file that does
        not decrypt is "wrong passphrase or damaged key file".
        """
        record = self._read(name)
        path = self.path_for(name)
        try:
            address = _text(record, "address")
            if "crypto" in record:
                if not isinstance(record["crypto"], dict):
                    raise _Damaged("'crypto' is not an object")
                if not passphrase:
                    raise KeystoreError(f"key {name!r} is encrypted: a passphrase is needed")
                key = _decrypt(record["crypto"], address, passphrase, name, path)
            else:
                key = PrivateKey.from_hex(_text(record, "private_key"))
        except KeystoreError:
            raise
        except (HashCloudError, KeyError, TypeError, ValueError, OverflowError) as exc:
            raise KeystoreError(f"key file {path} is damaged: {exc}") from None
        # Checked after decryption too: the key itself must be what the file names.
        if key.public_key.address != address:
            raise KeystoreError(f"key file {path} is damaged: address does not match the key")
        if record.get("public_key", key.public_key.hex()) != key.public_key.hex():
            raise KeystoreError(
                f"key file {path} is damaged: public_key does not match the key")
        return key

    def list(self) -> list[KeyInfo]:
        """Every key file in the home, sorted by name. A damaged file is listed too, with
        `error` saying what is wrong, rather than silently hidden."""
        out: list[KeyInfo] = []
        if not self.directory.is_dir():
            return out
        for path in sorted(self.directory.glob("*.json")):
            name = path.stem
            try:
                check_key_name(name)
                # Damage first, then access: a listing names the first thing to fix.
                record = self._read(name, check_access=False)
                address, public_key = record.get("address"), record.get("public_key")
                if not isinstance(address, str) or not isinstance(public_key, str):
                    raise KeystoreError("address or public_key missing or not a string")
                if PublicKey.from_hex(public_key).address != address:
                    raise KeystoreError("address does not match the public key")
                crypto = record.get("crypto")
                if "crypto" in record and not isinstance(crypto, dict):
                    raise KeystoreError(f"key file {path} is damaged: 'crypto' is not an object")
                check_key_file_access(path)
                out.append(KeyInfo(name, address, public_key, path, "crypto" in record))
            except HashCloudError as exc:
                out.append(KeyInfo(name, "", "", path, False, error=str(exc)))
        return out


def _text(section: dict, field: str) -> str:
    """The string `section[field]`, or `_Damaged` saying it is missing or not a string."""
    value = section.get(field)
    if not isinstance(value, str):
        raise _Damaged(f"{field!r} is missing or not a string")
    return value


def _hex(section: dict, field: str) -> bytes:
    """The bytes of the hex string `section[field]`, or `_Damaged`."""
    try:
        return bytes.fromhex(_text(section, field))
    except ValueError:
        raise _Damaged(f"{field!r} is not hex") from None


def _int(section: dict, field: str, low: int, high: int) -> int:
    """The integer `section[field]` in [low, high] (not a bool), or `_Damaged`."""
    value = section.get(field)
    if type(value) is not int or not low <= value <= high:
        raise _Damaged(f"{field!r} must be an integer in [{low}, {high}]")
    return value


def _decrypt(crypto: object, address: str, passphrase: str, name: str, path: Path) -> PrivateKey:
    """Decrypt the `crypto` section of key `name` (scrypt + AES-256-GCM, address as AAD)."""
    if not isinstance(crypto, dict):
        raise _Damaged("'crypto' is not an object")
    if crypto.get("kdf") != "scrypt" or crypto.get("cipher") != "aes-256-gcm":
        raise KeystoreError(f"key file {path} uses an unknown cipher")
    n = _int(crypto, "n", 2, _SCRYPT_MAX_N)
    if n & (n - 1):
        raise _Damaged("'n' must be a power of two")
    r, p = _int(crypto, "r", 1, _SCRYPT_MAX_R), _int(crypto, "p", 1, _SCRYPT_MAX_P)
    # Every bound is checked before anything is derived: a hostile file costs nothing.
    if 128 * n * r > _SCRYPT_MAX_MEMORY:
        raise _Damaged(f"scrypt n={n}, r={r} needs more than {_SCRYPT_MAX_MEMORY >> 20} MiB")
    if n * r * p > _SCRYPT_MAX_WORK:
        raise _Damaged(f"scrypt n={n}, r={r}, p={p} exceeds the work bound n*r*p <= 2^22")
    salt, nonce = _hex(crypto, "salt"), _hex(crypto, "nonce")
    ciphertext = _hex(crypto, "ciphertext")
    if not _SALT_BYTES[0] <= len(salt) <= _SALT_BYTES[1]:
        raise _Damaged(f"'salt' must be {_SALT_BYTES[0]}-{_SALT_BYTES[1]} bytes")
    if len(nonce) != 12:
        raise _Damaged("'nonce' must be 12 bytes")
    if len(ciphertext) != _CIPHERTEXT_BYTES:
        raise _Damaged(f"'ciphertext' must be {_CIPHERTEXT_BYTES} bytes")
    kdf = Scrypt(salt=salt, length=32, n=n, r=r, p=p)
    try:
        secret = AESGCM(kdf.derive(passphrase.encode())).decrypt(
            nonce, ciphertext, address.encode()
        )
    except InvalidTag:  # GCM cannot tell a wrong passphrase from a changed byte
        raise KeystoreError(
            f"wrong passphrase or damaged key file for key {name!r} ({path})") from None
    if len(secret) != 32:
        raise _Damaged("the decrypted key is not 32 bytes")
    return PrivateKey(int.from_bytes(secret, "big"))
