"""The TypeScript client offline: its generated code is what `make proto` generates from
protos/ (like test_generated_code.py for Python), it type-checks, and its signing code
reproduces the docs/signing.md test vector (clients/typescript/test/signing.test.ts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_generated_code import generated_files

ROOT = Path(__file__).resolve().parents[2]
GENERATED = Path("clients") / "typescript" / "src" / "gen"
NODE_BIN = ROOT / "node_modules" / ".bin"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if not (NODE_BIN / "tsx").exists():
        pytest.fail("node_modules is missing the TypeScript tools; run `make tools`")
    return subprocess.run(
        list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_generated_typescript_is_fresh(tmp_path: Path) -> None:
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
    assert fresh, "buf generate wrote no TypeScript"
    problems = [
        *(
            f"  {GENERATED / n}: differs from the protos"
            for n in fresh.keys() & committed.keys()
            if fresh[n] != committed[n]
        ),
        *(f"  {GENERATED / n}: not committed" for n in fresh.keys() - committed.keys()),
        *(f"  {GENERATED / n}: generated from no proto" for n in committed.keys() - fresh.keys()),
    ]
    assert not problems, (
        "generated TypeScript is stale; run `make proto` and commit the result:\n"
        + "\n".join(sorted(problems))
    )


def test_typescript_type_checks() -> None:
    result = _run(str(NODE_BIN / "tsc"), "--noEmit", "-p", "clients/typescript")
    assert result.returncode == 0, result.stdout + result.stderr


def test_typescript_signing_matches_the_vector() -> None:
    result = _run("node", "--import", "tsx", "--test", "clients/typescript/test/signing.test.ts")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
