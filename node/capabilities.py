"""What the node tells the mesh about its hardware: GPUs from nvidia-smi, else the CPU."""

from __future__ import annotations

import os
import shutil
import subprocess

from fleetwire.v1 import node_service_pb2 as nodes_pb2


def detect_gpus() -> list[nodes_pb2.GpuInfo]:
    """GPUs reported by ``nvidia-smi``; on a box without one, a single "cpu" entry with the
    machine's memory."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        gpus = []
        for line in out.strip().splitlines():
            name, _, memory = line.rpartition(",")
            if name and memory.strip().isdigit():
                gpus.append(
                    nodes_pb2.GpuInfo(
                        gpu_class=name.strip().lower().replace(" ", "-"),
                        memory_mib=int(memory.strip()),
                    )
                )
        if gpus:
            return gpus
    pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
    return [nodes_pb2.GpuInfo(gpu_class="cpu", memory_mib=pages * page_size // (1024 * 1024))]
