"""A node's side of the NodeStream handshake, one step at a time, for tests of what the
scheduler admits: Hello, the signed answer to the Challenge, and what came back."""

from __future__ import annotations

import grpc
from nacl.signing import SigningKey

from fleetwire.protocol import signing
from fleetwire.v1 import job_pb2, node_service_pb2_grpc
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from tests.integration.bridge_kit import reason_of


def hello(node_id: str, key: SigningKey) -> nodes_pb2.NodeStreamRequest:
    return nodes_pb2.NodeStreamRequest(
        hello=nodes_pb2.Hello(
            node_id=node_id,
            public_key=bytes(key.verify_key),
            networks=[job_pb2.NETWORK_TESTNET],
            models=[nodes_pb2.ServedModel(name="scripted", runtime="scripted")],
            slots=1,
        )
    )


async def handshake(
    channel: grpc.aio.Channel,
    node_id: str,
    key: SigningKey,
    server_name: str = "",
    *,
    signer: SigningKey | None = None,
    hello_message: nodes_pb2.NodeStreamRequest | None = None,
    stay: bool = False,
) -> str:
    """Hello (``hello_message``, default a minimal one with ``key``), the Challenge answered
    with ``signer`` (default ``key``) for ``server_name``: "welcome", or "<CODE> <reason>:
    <message>" of the refusal. With ``stay`` a welcomed stream is left open (ended with
    the channel), so the test can look at the session."""
    call = node_service_pb2_grpc.NodeServiceStub(channel).NodeStream()
    welcomed = False
    try:
        await call.write(hello_message or hello(node_id, key))
        challenge = (await call.read()).challenge
        signed = signing.node_auth_bytes(
            challenge.nonce, challenge.scheduler_id, node_id, bytes(key.verify_key), server_name
        )
        auth = nodes_pb2.Auth(
            signature=signing.sign(signer or key, signed), server_name=server_name
        )
        await call.write(nodes_pb2.NodeStreamRequest(auth=auth))
        answer = await call.read()
        if answer is grpc.aio.EOF:
            await call.wait_for_connection()
            return f"{(await call.code()).name}: {await call.details()}"
        welcomed = answer.WhichOneof("message") == "welcome"
        return str(answer.WhichOneof("message"))
    except grpc.aio.AioRpcError as err:
        return f"{err.code().name} {reason_of(err)}: {err.details()}"
    finally:
        if not (stay and welcomed):
            call.cancel()
