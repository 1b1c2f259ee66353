"""The test vector of docs/signing.md, as the document states it: the keys, the request and
result facts, their canonical bytes, digests and signatures. ``tests/unit/test_signing.py``
checks the document and the code against it; ``test_facts.py`` builds a Job from it."""

from __future__ import annotations

from nacl.signing import SigningKey

from fleetwire.protocol.signing import RequestFacts, ResultFacts
from fleetwire.v1 import job_pb2

PRIVATE_KEY_SEED = bytes(range(32))
PUBLIC_KEY_HEX = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
KEY_ID = "56475aa75463474c"

JOB_ID = "00000000-0000-4000-8000-000000000001"
PROMPT = "Write a haiku about a café."
OUTPUT = "Hello, fleet!"
FINISHED_AT_MS = 1_700_000_000_000

REQUEST = RequestFacts(
    job_id=JOB_ID,
    model="tiny-llama",
    model_version="",
    prompt=PROMPT,
    messages=[],
    max_tokens=16,
    temperature=0.7,
    top_p=0.9,
    seed=42,
    stop=["\n\n"],
    ignore_eos=False,
)
REQUEST_BYTES_HEX = (
    "00000014666c656574776972652e726571756573742e7631"
    "0000002430303030303030302d303030302d343030302d383030302d303030303030303030303031"
    "0000000a74696e792d6c6c616d61"
    "00000000"
    "0000001c57726974652061206861696b752061626f7574206120636166c3a92e"
    "000000080000000000000000"
    "000000080000000000000010"
    "000000043f333333"
    "000000043f666666"
    "00000008000000000000002a"
    "000000080000000000000001"
    "000000020a0a"
    "0000000100"
)
REQUEST_DIGEST_HEX = "98c4e0d6d907d5fbd0b24274f4d32c763131c99035b2b8d7bf3ca5e1448d4755"
OUTPUT_DIGEST_HEX = "f3e12048b4ee16621d27e04acbf01c2fcc2e38a48bce488b5e098c03d90f90ef"

RESULT = ResultFacts(
    job_id=JOB_ID,
    attempt=1,
    node_id="node-1",
    model="tiny-llama",
    request_digest=bytes.fromhex(REQUEST_DIGEST_HEX),
    output_digest=bytes.fromhex(OUTPUT_DIGEST_HEX),
    prompt_tokens=12,
    completion_tokens=5,
    finished_at_unix_ms=FINISHED_AT_MS,
)
RESULT_BYTES_HEX = (
    "00000013666c656574776972652e726573756c742e7631"
    "0000002430303030303030302d303030302d343030302d383030302d303030303030303030303031"
    "000000080000000000000001"
    "000000066e6f64652d31"
    "0000000a74696e792d6c6c616d61"
    "0000002098c4e0d6d907d5fbd0b24274f4d32c763131c99035b2b8d7bf3ca5e1448d4755"
    "00000020f3e12048b4ee16621d27e04acbf01c2fcc2e38a48bce488b5e098c03d90f90ef"
    "00000008000000000000000c"
    "000000080000000000000005"
    "000000080000018bcfe56800"
)
SIGNATURE_HEX = (
    "81c86aafe9dd38e8951400216c5ca50a8c099c490a1b8dc4d7c78a075d2197c3"
    "2d99d2a3b20ad55bb9c6e06371c2a518bbfbe5d2169aa7b0a45488f4d3452804"
)

CHAT_REQUEST = RequestFacts(
    job_id="00000000-0000-4000-8000-000000000002",
    model="tiny-llama",
    model_version="v1",
    prompt="",
    messages=[("system", "Be brief."), ("user", "Hi")],
    max_tokens=8,
    temperature=0.0,
    top_p=1.0,
    seed=None,
    stop=[],
    ignore_eos=True,
)
CHAT_REQUEST_BYTES_HEX = (
    "00000014666c656574776972652e726571756573742e7631"
    "0000002430303030303030302d303030302d343030302d383030302d303030303030303030303032"
    "0000000a74696e792d6c6c616d61"
    "000000027631"
    "00000000"
    "000000080000000000000002"
    "0000000673797374656d"
    "0000000942652062726965662e"
    "0000000475736572"
    "000000024869"
    "000000080000000000000008"
    "0000000400000000"
    "000000043f800000"
    "00000000"
    "000000080000000000000000"
    "0000000101"
)
CHAT_REQUEST_DIGEST_HEX = "c220d7601d0657262846ae241ea8c2cc3d3cfc946172745bb382efe7e7d8809c"

NONCE = bytes(range(32, 64))
SCHEDULER_ID = "scheduler-a"
SERVER_NAME = "scheduler.example"
NODE_AUTH_BYTES_HEX = (
    "00000016666c656574776972652e6e6f64652d617574682e7632"
    "00000020202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "0000000b7363686564756c65722d61"
    "000000117363686564756c65722e6578616d706c65"
    "000000066e6f64652d31"
    "0000002003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
)
NODE_AUTH_SIGNATURE_HEX = (
    "e8820e93b4a39eb43cc0f7672efb9c7bff7feac756608d7ac944e97fe499ddc0"
    "64f29a7e7080bbfecf375bac3a67554d4cbdef3e61bbf5f132cc246f4bf55305"
)

SIGNING_KEY = SigningKey(PRIVATE_KEY_SEED)
PUBLIC_KEY = bytes.fromhex(PUBLIC_KEY_HEX)
SIGNATURE = bytes.fromhex(SIGNATURE_HEX)
OTHER_KEY = SigningKey(bytes(range(100, 132)))


def vector_job() -> job_pb2.Job:
    """The SUCCEEDED job a client would receive for the vector."""
    return job_pb2.Job(
        job_id=JOB_ID,
        state=job_pb2.JOB_STATE_SUCCEEDED,
        spec=job_pb2.JobSpec(
            model="tiny-llama",
            prompt=PROMPT,
            sampling=job_pb2.SamplingParams(
                max_tokens=16, temperature=0.7, top_p=0.9, seed=42, stop=["\n\n"]
            ),
            priority=job_pb2.PRIORITY_CLASS_NORMAL,
            mode=job_pb2.INFERENCE_MODE_POLLING,
            network=job_pb2.NETWORK_MAINNET,
        ),
        output=OUTPUT,
        finish_reason="stop",
        usage=job_pb2.Usage(prompt_tokens=12, completion_tokens=5),
        timings=job_pb2.Timings(total_ms=12.5),
        signature=job_pb2.ResultSignature(
            node_id="node-1",
            key_id=KEY_ID,
            public_key=PUBLIC_KEY,
            signature=SIGNATURE,
            attempt=1,
            request_digest=bytes.fromhex(REQUEST_DIGEST_HEX),
            output_digest=bytes.fromhex(OUTPUT_DIGEST_HEX),
            finished_at_unix_ms=FINISHED_AT_MS,
        ),
        attempts=1,
    )
