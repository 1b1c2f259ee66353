"""The three-node RabbitMQ cluster of ``scripts/rabbitmq-cluster.sh``, driven from tests:
start/stop, SIGKILL a node, partition one off and heal it, find a queue's leader."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "rabbitmq-cluster.sh"
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
NODES = (1, 2, 3)


def cluster_available() -> bool:
    """Debian's rabbitmq-server (the script runs it directly) is installed."""
    return SERVER.exists() and shutil.which("bash") is not None


def amqp_port(node: int) -> int:
    return 5680 + node


def node_name(node: int) -> str:
    return f"fw-rmq{node}@localhost"


@dataclass
class BrokerCluster:
    """Calls the cluster script; every call waits for it and raises when it fails."""

    def run(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(
            [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"rabbitmq-cluster.sh {' '.join(args)}: {done.returncode}\n{done.stderr}"
            )
        return done.stdout.strip()

    def start(self) -> float:
        """Starts (or completes) the cluster; returns how long it took, in seconds."""
        began = time.monotonic()
        self.run("start")
        return time.monotonic() - began

    def stop(self) -> None:
        self.run("stop")

    def reset(self) -> None:
        """Stops every node and deletes the cluster's data."""
        self.run("reset")

    def urls(self) -> str:
        return self.run("urls")

    def kill(self, node: int) -> None:
        """SIGKILL node ``node``'s Erlang VM: no shutdown, no goodbye to its clients."""
        pid = int(self.run("pid", str(node)))
        os.kill(pid, signal.SIGKILL)

    def restart(self, node: int) -> None:
        self.run("start-node", str(node))

    def partition(self, node: int) -> None:
        self.run("partition", str(node))

    def heal(self, node: int) -> None:
        self.run("heal", str(node))

    def ctl(self, node: int, *args: str) -> str:
        """``rabbitmqctl -n <node> args`` as the cluster's own user (its cookie)."""
        env = {**os.environ, "HOME": str(ROOT / ".cache" / "rabbitmq-cluster" / "home")}
        done = subprocess.run(
            ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", node_name(node), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=True,
        )
        return done.stdout

    def leader_of(self, queue: str, *, asking: int = 1) -> int:
        """The number of the node leading quorum queue ``queue``."""
        out = self.ctl(asking, "list_queues", "name", "leader", "-q", "--no-table-headers")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return next(n for n in NODES if node_name(n) == parts[1])
        raise LookupError(f"no queue {queue!r} on the cluster")
