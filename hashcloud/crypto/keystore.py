"""Key files under the HashCloud home (`<home>/keys/<name>.json`, SPEC 7 `keygen`).

Files are created with mode 0600 atomically by `hashcloud.fsutil.create_exclusive`: the
content is written to a fresh temporary file opened with O_CREAT|O_EXCL and mode 0600 (never
readable by others, not even for an instant), fsynced, then hard-linked to its final name.
`link` fails if the name exists, so an existing key is never overwritten, even by a
concurrent writer.

A key file is plaintext JSON by default (protected by 0600 only) or, with a passphrase,
encrypted with scrypt (N=2^15, r=8, p=1) and AES-256-GCM from `cryptography`, the address
being the authenticated associated data.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hashcloud.crypto.keys import PrivateKey, PublicKey
from hashcloud.errors import HashCloudError, KeystoreError
from hashcloud.fsutil import create_exclusive
from hashcloud.params import DEFAULT_KEY_NAME

KEYFILE_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1


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

    def _read(self, name: str) -> dict:
        path = self.path_for(name)
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
        """True if the key file `name` needs a passphrase."""
        return "crypto" in self._read(name)

    def load(self, name: str = DEFAULT_KEY_NAME, passphrase: str | None = None) -> PrivateKey:
        """Load and check the private key `name`, decrypting it with `passphrase` if needed."""
        record = self._read(name)
        path = self.path_for(name)
        try:
            if "crypto" in record:
                if not passphrase:
                    raise KeystoreError(f"key {name!r} is encrypted: a passphrase is needed")
                c = record["crypto"]
                if c.get("kdf") != "scrypt" or c.get("cipher") != "aes-256-gcm":
                    raise KeystoreError(f"key file {path} uses an unknown cipher")
                kdf = Scrypt(salt=bytes.fromhex(c["salt"]), length=32,
                             n=int(c["n"]), r=int(c["r"]), p=int(c["p"]))
                try:
                    secret = AESGCM(kdf.derive(passphrase.encode())).decrypt(
                        bytes.fromhex(c["nonce"]), bytes.fromhex(c["ciphertext"]),
                        str(record["address"]).encode(),
                    )
                except InvalidTag:
                    raise KeystoreError(f"wrong passphrase for key {name!r}") from None
                key = PrivateKey(int.from_bytes(secret, "big"))
            else:
                key = PrivateKey.from_hex(record["private_key"])
        except KeystoreError:
            raise
        except (HashCloudError, KeyError, TypeError, ValueError) as exc:
            raise KeystoreError(f"key file {path} is damaged: {exc}") from None
        if key.public_key.address != record.get("address"):
            raise KeystoreError(f"key file {path} is damaged: address does not match the key")
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
                record = self._read(name)
                address, public_key = record.get("address"), record.get("public_key")
                if not isinstance(address, str) or not isinstance(public_key, str):
                    raise KeystoreError("address or public_key missing or not a string")
                if PublicKey.from_hex(public_key).address != address:
                    raise KeystoreError("address does not match the public key")
                out.append(KeyInfo(name, address, public_key, path, "crypto" in record))
            except HashCloudError as exc:
                out.append(KeyInfo(name, "", "", path, False, error=str(exc)))
        return out
