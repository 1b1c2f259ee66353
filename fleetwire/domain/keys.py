"""Node key files: a raw 32-byte ed25519 seed, hex encoded, readable by the owner only."""

from __future__ import annotations

import os
from pathlib import Path

from nacl.signing import SigningKey

from fleetwire.domain.errors import ConfigurationError


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
    """The node's key: loaded when the file exists, created (0600) otherwise. A rotation
    interrupted between its two renames (no ``path``, a ``<path>.next``) is completed."""
    if path.exists():
        return load_key(path)
    promoted = promote_next_key(path)
    if promoted is not None:
        return promoted
    return create_key(path)


def next_key_path(path: Path) -> Path:
    """Where ``fleetwire keys rotate`` puts the successor of the key at ``path``."""
    return path.with_name(path.name + ".next")


def previous_key_path(path: Path) -> Path:
    """Where a promoted rotation keeps the key it replaced."""
    return path.with_name(path.name + ".prev")


def create_next_key(path: Path) -> SigningKey:
    """Step 1 of a rotation: writes a new key beside ``path`` (``<path>.next``, 0600) and
    returns it; ``path`` itself is untouched, so a running node keeps its key. Refuses when
    a successor is already waiting (FileExistsError): register or delete that one first."""
    if not path.exists():
        raise ConfigurationError(f"key file {path} does not exist; create it with `keys new`")
    load_key(path)  # refuse to rotate a key file that is itself unusable
    return create_key(next_key_path(path))


def promote_next_key(path: Path) -> SigningKey | None:
    """Step 3 of a rotation, done by the node: ``<path>.next`` becomes ``path`` and the old
    key is kept as ``<path>.prev``. Returns the new key, or None when no successor waits.
    Each rename is atomic; a crash in between leaves ``path`` absent and ``.prev`` and
    ``.next`` present, which the next promotion completes."""
    successor = next_key_path(path)
    if not successor.exists():
        return None
    key = load_key(successor)
    if path.exists():
        os.replace(path, previous_key_path(path))
    os.replace(successor, path)
    return key
