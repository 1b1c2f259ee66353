"""Key files and the file side of a key rotation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fleetwire.domain.errors import ConfigurationError
from fleetwire.domain.keys import (
    create_key,
    create_next_key,
    load_key,
    load_or_create_key,
    next_key_path,
    previous_key_path,
    promote_next_key,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_keys_are_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key = create_key(path)
    assert mode(path) == 0o600
    assert load_key(path).verify_key == key.verify_key
    with pytest.raises(FileExistsError):
        create_key(path)


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    create_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="0600"):
        load_key(path)


def test_rotation_writes_a_successor_then_promotes_it(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    old = create_key(path)
    new = create_next_key(path)
    assert mode(next_key_path(path)) == 0o600
    assert load_key(path).verify_key == old.verify_key  # the running key is untouched
    with pytest.raises(FileExistsError):
        create_next_key(path)  # one rotation at a time

    promoted = promote_next_key(path)
    assert promoted is not None
    assert promoted.verify_key == new.verify_key
    assert load_key(path).verify_key == new.verify_key
    assert load_key(previous_key_path(path)).verify_key == old.verify_key
    assert not next_key_path(path).exists()
    assert promote_next_key(path) is None


def test_rotation_needs_an_existing_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        create_next_key(tmp_path / "node.key")


def test_an_interrupted_promotion_is_completed_on_load(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    create_key(path)
    new = create_next_key(path)
    path.rename(previous_key_path(path))  # a crash between the two renames
    assert load_or_create_key(path).verify_key == new.verify_key
    assert load_key(path).verify_key == new.verify_key
