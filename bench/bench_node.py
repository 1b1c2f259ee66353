"""A node agent on the bench runtime (``bench.bench_runtime``): the real node process —
``node.main`` with its handshake, heartbeats, Accept, Progress, signed Result, drain and key
rotation — with an engine that answers at once, injected here, so a benchmark measures the
mesh and not the model. A measurement instrument.

    python -m bench.bench_node        # configured by FLEETWIRE_NODE_* like ``python -m node``

Slots: ``FLEETWIRE_NODE_MAX_NUM_SEQS``. SIGTERM/SIGINT drains and exits 0.
"""

from __future__ import annotations

from collections.abc import Mapping

from bench.bench_runtime import bench_runtimes
from fleetwire.process.settings import NodeSettings
from node.config import NodeProfile
from node.main import main as node_main
from node.runtime import Runtime


def bench_node_runtimes(profile: NodeProfile, _settings: NodeSettings) -> Mapping[str, Runtime]:
    return bench_runtimes(profile)


def main() -> None:
    node_main(bench_node_runtimes)


if __name__ == "__main__":
    main()
