"""Benchmarks of the mesh against raw RabbitMQ, Celery and direct vLLM (``make bench``)."""
