"""Developer and operator tools: the ``fleetwire`` CLI, the admin commands, the local mesh
supervisor (``fleetwire up``), the demo and the tiny-model builder. They may import the
core, the services and the SDK; nothing imports them back."""
