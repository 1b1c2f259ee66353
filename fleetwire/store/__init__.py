"""PostgreSQL, the source of truth: the connection and migrations (``db``), and one module of
SQL per aggregate: jobs, attempts, batches, the outbox, nodes, tenants, the ledger."""
