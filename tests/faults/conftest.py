"""Fault-injection fixtures: scheduler replicas as real processes, so they can be killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.support.eventually import eventually_sync


@dataclass
class SchedulerProcess:
    name: str
    port: int
    admin_port: int
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is acked or closed politely."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    def listening() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"scheduler exited with {process.returncode}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    eventually_sync(listening, within=timeout, interval=0.1, what=f"the scheduler on port {port}")


@pytest.fixture
def start_scheduler(
    mesh_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[object]:
    """Starts scheduler replicas (``python -m scheduler``) on this run's services; stops
    them at the end and prints their logs when the test failed."""
    started: list[SchedulerProcess] = []

    def start(name: str) -> SchedulerProcess:
        port = free_port()
        log = tmp_path / f"{name}.log"
        env = {
            **os.environ,
            **mesh_env,
            "FLEETWIRE_SCHEDULER_PORT": str(port),
            "FLEETWIRE_SCHEDULER_ADMIN_PORT": str(admin_port := free_port()),
            "FLEETWIRE_SCHEDULER_SCHEDULER_ID": name,
            # Fault tests restart services and kill processes; a loaded machine must not
            # also make a scripted node miss its lease and turn the test into another one.
            "FLEETWIRE_SCHEDULER_LEASE": "30",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        replica = SchedulerProcess(name, port, admin_port, process, log)
        started.append(replica)
        _wait_for_port(port, process, 30)
        return replica

    yield start
    for replica in started:
        replica.stop()
    report = getattr(request.node, "rep_call", None)
    if report is None or report.failed:
        for replica in started:
            print(f"===== {replica.name} =====\n{replica.log.read_text(errors='replace')}")
