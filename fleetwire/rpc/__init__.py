"""The gRPC edge every fleetwire server shares: channel options, request decoding and error
mapping (``edge``), status details (``status``), wire-fault naming and the server builder."""
