"""The scheduler: NodeStream server, node registry, queue consumer, dispatcher, finaliser."""
