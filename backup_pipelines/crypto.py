"""age (X25519) keys: recipients for backup runners, identities for verify and restore.

Backups are encrypted with pyrage, the Python binding of the Rust age implementation, so every stored object
decrypts with the standard `age -d -i <identity>` CLI and vice versa.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyrage

from backup_pipelines.errors import DecryptionError, IntegrityError, MissingSecretError

IDENTITY_ENV = "BACKUP_AGE_IDENTITY"
IDENTITY_FILE_ENV = "BACKUP_AGE_IDENTITY_FILE"


@dataclass(frozen=True)
class KeyPair:
    """A freshly generated age key pair, as `age-keygen` would write it."""

    identity: str
    recipient: str

    def identity_file_text(self) -> str:
        return f"# public key: {self.recipient}\n{self.identity}\n"


def generate_key_pair() -> KeyPair:
    """Return a new random age X25519 key pair."""
    identity = pyrage.x25519.Identity.generate()
    return KeyPair(identity=str(identity), recipient=str(identity.to_public()))


def fingerprint(recipient: str) -> str:
    """Given an age recipient (public key), return a short stable fingerprint for logs and metadata."""
    return "sha256:" + hashlib.sha256(recipient.encode()).hexdigest()[:16]


def parse_recipients(recipients: list[str]) -> list[pyrage.x25519.Recipient]:
    """Return pyrage recipients for the given age public keys."""
    return [pyrage.x25519.Recipient.from_str(recipient) for recipient in recipients]


def parse_identities(text: str, source: str) -> list[pyrage.x25519.Identity]:
    """Given the text of an age identity file (comments allowed), return its identities.

    Raise MissingSecretError naming `source` if it holds no valid AGE-SECRET-KEY line.
    """
    identities = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                identities.append(pyrage.x25519.Identity.from_str(line))
            except Exception as error:
                raise MissingSecretError(f"{source} holds a malformed age identity: {error}") from error
    if not identities:
        raise MissingSecretError(f"{source} holds no age identity (an AGE-SECRET-KEY-... line)")
    return identities


def load_identities(identity: str | None = None, identity_file: str | None = None) -> list[pyrage.x25519.Identity]:
    """Return the age identities to decrypt with.

    Given an identity string or an identity file path (else the env vars BACKUP_AGE_IDENTITY, then
    BACKUP_AGE_IDENTITY_FILE), return the parsed identities. Raise MissingSecretError naming both variables
    if none is configured, or naming the file if it cannot be read.
    """
    identity = identity or os.environ.get(IDENTITY_ENV)
    if identity:
        return parse_identities(identity, f"${IDENTITY_ENV}")
    identity_file = identity_file or os.environ.get(IDENTITY_FILE_ENV)
    if identity_file:
        path = Path(identity_file).expanduser()
        try:
            return parse_identities(path.read_text(), str(path))
        except OSError as error:
            raise MissingSecretError(f"cannot read the age identity file {path}: {error.strerror}") from error
    raise MissingSecretError(
        f"no age identity to decrypt backups with: set {IDENTITY_ENV} (the AGE-SECRET-KEY-... line) or "
        f"{IDENTITY_FILE_ENV} (a path to the identity file)"
    )


def encrypt_stream(reader: IO[bytes], writer: IO[bytes], recipients: list[str]) -> None:
    """Encrypt everything `reader` yields to `writer` for the given age recipients, streaming."""
    pyrage.encrypt_io(reader, writer, parse_recipients(recipients))


def decrypt_stream(reader: IO[bytes], writer: IO[bytes], identities: list[pyrage.x25519.Identity]) -> None:
    """Decrypt an age stream from `reader` to `writer`.

    Raise DecryptionError if no identity matches a recipient, IntegrityError if the ciphertext is damaged.
    """
    try:
        pyrage.decrypt_io(reader, writer, identities)
    except pyrage.DecryptError as error:
        if "no matching keys" in str(error).lower():
            raise DecryptionError(
                "the age identity given does not match any recipient of this backup (wrong key?)"
            ) from error
        raise IntegrityError(f"decryption failed, the stored backup is damaged: {error}") from error
