"""RabbitMQ and Redis: the reconnecting AMQP connection, the queue topology, the confirmed
job publisher, per-job event streams and the pub/sub channels that outlive Redis outages."""
