"""The hand-written half of the protocol: the signing scheme and the facts it covers.

``signing`` is the byte-level scheme (docs/signing.md); ``facts`` maps the ``fleetwire.v1``
messages onto the facts that are signed and verifies a finished job offline. Both need only
protobuf and PyNaCl, so every client can depend on them.
"""
