"""Which connected node may run a job, and which of those should.

Eligibility (all must hold): the node is not draining or excluded (checked by the
registry), is on the job's network, serves the job's model (and version, when the job
names one), has a GPU of the required class with at least the required memory, is in the
required region, is a member of the job's subcloud — and a node that belongs to subclouds
is reserved for them: it takes no public jobs. Pure logic, no I/O.

Score (higher wins): the share of the node's slots that are free (spreads load), plus a
small bonus for a fast recent time to first token, minus its penalty points, plus its
reputation from validation jobs (``scheduler.validation_rules``) above or below neutral.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetwire.messaging.topology import NETWORK_NAMES
from fleetwire.v1 import job_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2


@dataclass(frozen=True, slots=True)
class NodeProfile:
    """What a node advertised in Hello."""

    networks: frozenset[str]
    models: dict[str, str]  # name -> version
    region: str = ""
    subclouds: frozenset[str] = frozenset()
    gpus: tuple[tuple[str, int], ...] = ()  # (class, memory MiB)

    @classmethod
    def from_hello(cls, hello: nodes_pb2.Hello) -> NodeProfile:
        networks = frozenset(NETWORK_NAMES[n] for n in hello.networks if n in NETWORK_NAMES)
        return cls(
            networks=networks or frozenset({NETWORK_NAMES[job_pb2.NETWORK_MAINNET]}),
            models={m.name: m.version for m in hello.models},
            region=hello.region,
            subclouds=frozenset(hello.subclouds),
            gpus=tuple((g.gpu_class.lower(), int(g.memory_mib)) for g in hello.gpus),
        )


@dataclass(frozen=True, slots=True)
class JobNeeds:
    """What a job requires of its node."""

    network: str
    model: str
    model_version: str = ""
    min_gpu_memory_mib: int = 0
    gpu_class: str = ""
    region: str = ""
    subcloud: str = ""

    @classmethod
    def from_spec(cls, spec: job_pb2.JobSpec) -> JobNeeds:
        c = spec.constraints
        return cls(
            network=NETWORK_NAMES.get(spec.network, NETWORK_NAMES[job_pb2.NETWORK_MAINNET]),
            model=spec.model,
            model_version=spec.model_version,
            min_gpu_memory_mib=int(c.min_gpu_memory_mib),
            gpu_class=c.gpu_class.lower(),
            region=c.region,
            subcloud=c.subcloud,
        )


def ineligibility(node: NodeProfile, job: JobNeeds) -> str | None:
    """Why ``node`` may not run ``job`` (a stable reason), or None when it may."""
    if job.network not in node.networks:
        return "NETWORK"
    if job.model not in node.models:
        return "MODEL"
    if job.model_version and node.models[job.model] != job.model_version:
        return "MODEL_VERSION"
    if job.subcloud:
        if job.subcloud not in node.subclouds:
            return "SUBCLOUD"
    elif node.subclouds:
        return "RESERVED_FOR_SUBCLOUD"
    if job.region and node.region != job.region:
        return "REGION"
    if job.gpu_class or job.min_gpu_memory_mib:
        fits = any(
            (not job.gpu_class or gpu_class == job.gpu_class) and memory >= job.min_gpu_memory_mib
            for gpu_class, memory in node.gpus
        )
        if not fits:
            return "GPU"
    return None


@dataclass
class Standing:
    """Live figures the score uses."""

    slots: int
    free_slots: int
    penalty_points: float = 0.0
    recent_ttft_ms: list[float] = field(default_factory=list)
    reputation: float = 0.5  # scheduler.validation_rules.reputation; 0.5: nothing known


def score(standing: Standing) -> float:
    """Free share of slots (0..1), up to +0.2 for a fast recent time to first token, minus
    0.1 per penalty point, plus or minus up to 0.25 for reputation (0.5 is neutral)."""
    free_share = standing.free_slots / standing.slots if standing.slots else 0.0
    ttft_bonus = 0.0
    if standing.recent_ttft_ms:
        mean = sum(standing.recent_ttft_ms) / len(standing.recent_ttft_ms)
        ttft_bonus = 0.2 / (1.0 + mean / 100.0)
    trust = 0.5 * (standing.reputation - 0.5)
    return free_share + ttft_bonus - 0.1 * standing.penalty_points + trust
