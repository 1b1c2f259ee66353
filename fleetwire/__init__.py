"""fleetwire core: what every fleetwire process shares.

Generated stubs (``fleetwire.v1``), settings, the signing scheme, queue topology, the job
state machine, the PostgreSQL schema and store, Redis event keys and the error model.
Service packages (``broker_bridge``, ``scheduler``, ``node``) depend on this package and
never on each other.
"""

__version__ = "0.1.0"
