"""The credit ledger: double entry, once per job.

When a mainnet job is finalised, the same transaction writes a charge to its tenant
(``tenant:<id>``, negative) and an earning to the node's owner (``owner:<id>``, positive),
priced per 1,000 prompt and completion tokens in micro-credits. A unique index on
(job, kind) makes a second attempt to bill the same job a no-op, however often a result or
message is redelivered. Testnet jobs are free and write nothing. Balances are sums.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Prices:
    """Micro-credits per 1,000 tokens."""

    per_1k_prompt_tokens: int
    per_1k_completion_tokens: int

    def cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Rounded up, so a job with tokens never costs nothing at a non-zero price."""
        micro = prompt_tokens * self.per_1k_prompt_tokens
        micro += completion_tokens * self.per_1k_completion_tokens
        return -(-micro // 1000)


async def bill_job(conn: asyncpg.Connection, job_id: uuid.UUID, prices: Prices) -> int:
    """Writes the job's two entries (inside the caller's transaction) and returns the amount
    charged; 0 when the job is free or was billed already."""
    job = await conn.fetchrow(
        "SELECT j.tenant_id, j.network, j.node_id, j.prompt_tokens, j.completion_tokens,"
        " coalesce(n.owner, j.node_id) AS owner"
        " FROM jobs j LEFT JOIN nodes n ON n.node_id = j.node_id WHERE j.job_id = $1",
        job_id,
    )
    if job is None or job["network"] != "mainnet":
        return 0
    amount = prices.cost(job["prompt_tokens"] or 0, job["completion_tokens"] or 0)
    if amount <= 0:
        return 0
    inserted = await conn.fetchval(
        "INSERT INTO ledger_entries (job_id, account, kind, amount) VALUES"
        " ($1, $2, 'JOB_CHARGE', $3), ($1, $4, 'NODE_EARNING', $5)"
        " ON CONFLICT (job_id, kind) DO NOTHING RETURNING entry_id",
        job_id,
        f"tenant:{job['tenant_id']}",
        -amount,
        f"owner:{job['owner']}",
        amount,
    )
    return amount if inserted is not None else 0


async def balance(conn: asyncpg.Connection | asyncpg.Pool, account: str) -> int:
    """The account's balance in micro-credits (0 for an unknown account)."""
    value = await conn.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE account = $1", account
    )
    return int(value)
