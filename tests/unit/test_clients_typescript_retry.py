"""The TypeScript client's retry policy, its Watch cursor, and both over the real gRPC wire
against a fake JobService in node's own process (clients/typescript/test/retry.test.ts and
client.test.ts): offline, so ``make test`` runs them like the signing vector's."""

from __future__ import annotations

import re

from tests.unit.test_clients_typescript import _run

OFFLINE_TESTS = ("clients/typescript/test/retry.test.ts", "clients/typescript/test/client.test.ts")


def test_typescript_retries_and_watch_resumption() -> None:
    result = _run("node", "--import", "tsx", "--test", "--test-reporter=tap", *OFFLINE_TESTS)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    counts = dict(re.findall(r"^# (pass|fail) (\d+)$", report, re.MULTILINE))
    assert counts.get("fail") == "0", report
    assert int(counts.get("pass", "0")) >= 11, report
