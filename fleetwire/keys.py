"""Node key files: a raw 32-byte ed25519 seed, hex encoded, readable by the owner only."""

from __future__ import annotations

import os
from pathlib import Path

from nacl.signing import SigningKey

from fleetwire.errors import ConfigurationError


def create_key(path: Path) -> SigningKey:
    """Writes a new key to ``path`` with mode 0600; refuses to overwrite an existing file."""
    key = SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(bytes(key).hex() + "\n")
    return key


def load_key(path: Path) -> SigningKey:
    """Reads a key file. Raises ConfigurationError if it is unreadable, malformed or
    readable by others than its owner."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigurationError(f"key file {path} has mode {mode:o}; it must be 0600")
    try:
        seed = bytes.fromhex(path.read_text().strip())
        return SigningKey(seed)
    except ValueError as err:
        raise ConfigurationError(f"key file {path} is not a hex ed25519 seed") from err


def load_or_create_key(path: Path) -> SigningKey:
    """The node's key: loaded when the file exists, created (0600) otherwise."""
    if path.exists():
        return load_key(path)
    return create_key(path)
