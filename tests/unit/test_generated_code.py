"""The committed stubs are what `make proto` generates, and the contracts pass `buf lint`.

Both run tools as subprocesses (fast, no network); they live with the unit tests so that a
stale stub or a lint error fails the quickest test run, as it fails CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = Path("protocol") / "fleetwire" / "v1"
BUF = ROOT / "node_modules" / ".bin" / "buf"


def generated_files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by its relative path, caches left out."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "gen-proto.sh"), str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"scripts/gen-proto.sh failed:\n{result.stdout}{result.stderr}"

    fresh = generated_files(tmp_path / GENERATED)
    committed = generated_files(ROOT / GENERATED)
    assert fresh, "scripts/gen-proto.sh generated nothing"
    stale = sorted(
        name for name in fresh.keys() & committed.keys() if fresh[name] != committed[name]
    )
    missing = sorted(fresh.keys() - committed.keys())
    extra = sorted(committed.keys() - fresh.keys())
    problems = [
        *(f"  {GENERATED / name}: differs from the protos" for name in stale),
        *(f"  {GENERATED / name}: not committed" for name in missing),
        *(f"  {GENERATED / name}: generated from no proto (delete it)" for name in extra),
    ]
    assert not problems, (
        "generated code is stale; run `make proto` and commit the result:\n" + "\n".join(problems)
    )


def test_buf_lint() -> None:
    if not BUF.exists():
        pytest.fail(f"{BUF.relative_to(ROOT)} is missing; run `make tools` to install buf")
    result = subprocess.run(
        [str(BUF), "lint"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"buf lint failed:\n{result.stdout}{result.stderr}"
