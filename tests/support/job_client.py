"""A thin blocking client on the raw generated stub, for the end-to-end tests that check
the wire messages themselves (the SDK is tested on its own in test_clients_python)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc

from fleetwire.rpc.options import CLIENT_OPTIONS
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.support.tls import client_credentials

PRIORITIES = {
    "urgent": job_pb2.PRIORITY_CLASS_URGENT,
    "normal": job_pb2.PRIORITY_CLASS_NORMAL,
    "bulk": job_pb2.PRIORITY_CLASS_BULK,
    "test": job_pb2.PRIORITY_CLASS_TEST,
}
NETWORKS = {"mainnet": job_pb2.NETWORK_MAINNET, "testnet": job_pb2.NETWORK_TESTNET}


def state_name(state: int) -> str:
    name: str = job_pb2.JobState.Name(state)
    return name.removeprefix("JOB_STATE_")


def is_terminal(job: job_pb2.Job) -> bool:
    return job.state in (
        job_pb2.JOB_STATE_SUCCEEDED,
        job_pb2.JOB_STATE_FAILED,
        job_pb2.JOB_STATE_EXPIRED,
        job_pb2.JOB_STATE_CANCELLED,
        job_pb2.JOB_STATE_DEAD_LETTERED,
    )


def make_spec(
    prompt: str,
    *,
    model: str = "tiny-llama",
    max_tokens: int = 32,
    priority: str = "normal",
    temperature: float = 0.0,
    seed: int | None = None,
    ttl: timedelta | None = None,
    network: str = "mainnet",
    chat: bool = False,
) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(
        model=model,
        priority=PRIORITIES[priority],
        network=NETWORKS[network],
        sampling=job_pb2.SamplingParams(max_tokens=max_tokens, temperature=temperature),
    )
    if chat:
        spec.messages.append(job_pb2.ChatMessage(role="user", content=prompt))
    else:
        spec.prompt = prompt
    if seed is not None:
        spec.sampling.seed = seed
    if ttl is not None:
        spec.ttl.FromTimedelta(ttl)
    return spec


class JobClient:
    """A thin blocking wrapper over the generated stub."""

    def __init__(self, address: str, ca_file: Path | None = None) -> None:
        """TLS verified against ``ca_file``; plaintext without one."""
        if ca_file is None:
            self._channel = grpc.insecure_channel(address, options=CLIENT_OPTIONS)
        else:
            self._channel = grpc.secure_channel(
                address, client_credentials(ca_file), options=CLIENT_OPTIONS
            )
        self._stub = job_service_pb2_grpc.JobServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout: float) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout)

    def submit(self, spec: job_pb2.JobSpec, *, timeout: float = 30.0) -> job_pb2.Job:
        job: job_pb2.Job = self._stub.Submit(
            job_service_pb2.SubmitRequest(job=spec), timeout=timeout
        ).job
        return job

    def status(self, job_id: str) -> job_pb2.Job:
        job: job_pb2.Job = self._stub.Status(
            job_service_pb2.StatusRequest(job_id=job_id), timeout=10
        ).job
        return job

    def watch(
        self,
        job_id: str,
        *,
        after_sequence: int = 0,
        after_attempt: int = 0,
        timeout: float | None = None,
    ) -> Iterator[job_service_pb2.WatchResponse]:
        """The raw Watch stream after chunk ``after_sequence`` of attempt ``after_attempt``
        (0: that sequence in any attempt); not resumed when it drops."""
        request = job_service_pb2.WatchRequest(
            job_id=job_id, after_sequence=after_sequence, after_attempt=after_attempt
        )
        yield from self._stub.Watch(request, timeout=timeout)

    def cancel(self, job_id: str, reason: str = "") -> job_pb2.Job:
        job: job_pb2.Job = self._stub.Cancel(
            job_service_pb2.CancelRequest(job_id=job_id, reason=reason), timeout=10
        ).job
        return job

    def wait(self, job_id: str, *, timeout: float) -> job_pb2.Job:
        """Follows the job with Watch until it is terminal."""
        last: job_pb2.Job | None = None
        try:
            for event in self.watch(job_id, timeout=timeout):
                if event.HasField("job"):
                    last = event.job
                    if is_terminal(last):
                        return last
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # type: ignore[attr-defined]
                raise
        return self.status(job_id)
