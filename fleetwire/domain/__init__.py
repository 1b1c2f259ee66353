"""The rules of the mesh, with no I/O but key files: the job state machine, what a valid
submit is, the error model, how a stored job reads as a ``fleetwire.v1.Job``, node keys."""
