"""Submit a job, stream its tokens, verify the node's signature offline.

    FLEETWIRE_ADDRESS=127.0.0.1:50051 FLEETWIRE_API_KEY=fwk_... \\
        python clients/python/examples/quickstart.py [NODE_PUBLIC_KEY_HEX ...]

Pass the public keys of the nodes you trust (`fleetwire keys show --file node.key` prints
one); without any, the key named by the job itself is used (integrity only).
"""

from __future__ import annotations

import sys

from fleetwire_client import Client, JobRequest, Token


def main(trusted_keys: list[str]) -> int:
    with Client() as client:  # address and API key from the environment
        job = client.submit(JobRequest(prompt="Once upon a time", max_tokens=32))
        print(f"submitted {job.job_id} ({job.state.name})")
        mid_line = False  # tokens print without newlines; state changes get lines of their own
        for event in client.watch(job.job_id, timeout=300):
            if isinstance(event, Token):
                print(event.text, end="", flush=True)
                mid_line = True
            else:
                print(("\n" if mid_line else "") + f"[{event.state.name}]", flush=True)
                mid_line = False
        result = client.status(job.job_id)
    signature = result.signature
    if signature is None:
        print(f"no signed result: {result.state.name} {result.error_reason}")
        return 1
    keys: list[str | None] = [*trusted_keys] or [None]
    verified = any(result.verify(key) for key in keys)
    print(
        f"{result.completion_tokens} tokens by {signature.node_id} (key {signature.key_id}): "
        f"signature {'verified' if verified else 'INVALID'}"
    )
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
