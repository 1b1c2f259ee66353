"""What the node tells the mesh about its hardware and models.

GPUs come from ``nvidia-smi``; when it is missing or fails, from torch (``torch.cuda``) if
torch is installed and sees a GPU; otherwise the node advertises a single "cpu" entry with
the machine's memory and CPU model. Detection never raises: a broken driver makes a node
advertise its CPU, not crash.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import structlog

from fleetwire.v1 import node_service_pb2 as nodes_pb2

log = structlog.get_logger(__name__)

NVIDIA_SMI_TIMEOUT_S = 10.0


def gpu_class_of(name: str) -> str:
    """A short, stable class from a product name: "NVIDIA A100-SXM4-80GB" → "a100",
    "NVIDIA GeForce RTX 4090" → "rtx-4090", "NVIDIA L4" → "l4"."""
    words = name.lower().replace("nvidia", "").replace("geforce", "").split()
    if not words:
        return "unknown"
    first = words[0].split("-")[0]
    if first in ("rtx", "gtx", "tesla", "quadro") and len(words) > 1:
        return f"{first}-{words[1].split('-')[0]}"
    return re.sub(r"[^a-z0-9]+", "-", first).strip("-") or "unknown"


def parse_nvidia_smi(out: str) -> list[nodes_pb2.GpuInfo]:
    """GPUs from ``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits``."""
    gpus = []
    for line in out.strip().splitlines():
        name, _, memory = line.rpartition(",")
        name, memory = name.strip(), memory.strip()
        if name and memory.isdigit():
            gpus.append(
                nodes_pb2.GpuInfo(
                    gpu_class=gpu_class_of(name),
                    memory_mib=int(memory),
                    name=name,
                    source="nvidia-smi",
                )
            )
    return gpus


def _from_nvidia_smi() -> list[nodes_pb2.GpuInfo]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("nvidia-smi failed", error=str(err))
        return []
    return parse_nvidia_smi(out)


def _from_torch() -> list[nodes_pb2.GpuInfo]:
    if importlib.util.find_spec("torch") is None:
        return []
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        gpus = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(
                nodes_pb2.GpuInfo(
                    gpu_class=gpu_class_of(str(props.name)),
                    memory_mib=int(props.total_memory) // (1024 * 1024),
                    name=str(props.name),
                    source="torch",
                )
            )
        return gpus
    except Exception as err:  # a broken CUDA install must not stop the node
        log.warning("torch GPU detection failed", error=str(err))
        return []


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo; empty when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return ""


def _cpu() -> nodes_pb2.GpuInfo:
    pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
    return nodes_pb2.GpuInfo(
        gpu_class="cpu",
        memory_mib=pages * page_size // (1024 * 1024),
        name=cpu_name(),
        source="cpu",
    )


def detect_gpus() -> list[nodes_pb2.GpuInfo]:
    """GPUs from nvidia-smi, else torch, else one "cpu" entry with the machine's memory."""
    return _from_nvidia_smi() or _from_torch() or [_cpu()]


def model_version_of(path: Path) -> str:
    """A version for a model directory with none configured: the first 16 hex digits of the
    build key of a fleetwire-built model (``.fleetwire-model.json``); empty otherwise."""
    try:
        marker = json.loads((path / ".fleetwire-model.json").read_text())
        return str(marker["build_key"])[:16]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
