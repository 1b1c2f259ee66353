"""The credit ledger: double entry, once per job.

When a mainnet job is finalised, the same statement (``JobStore.finalise_successes``) writes
a charge to its tenant (``tenant:<id>``, negative) and an earning to the node's owner
(``owner:<id>``, positive), priced per 1,000 prompt and completion tokens in micro-credits,
for the token counts the mesh checked (``Bill``; each entry records them and their source).
A unique index on (job, kind) makes a second attempt to bill the same job a no-op, however
often a result or message is redelivered. Testnet jobs are free and write nothing.
Balances are sums.
"""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class Bill:
    """What one job is billed: the amount, for which token counts, and where the counts
    came from (``claimed``: the node's signed counts; ``capped``: cut to what the spec
    allows)."""

    amount: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_source: str = "claimed"

    @classmethod
    def of(
        cls, prices: Prices, prompt_tokens: int, completion_tokens: int, source: str = "claimed"
    ) -> Bill:
        return cls(
            prices.cost(prompt_tokens, completion_tokens),
            prompt_tokens,
            completion_tokens,
            source,
        )


async def balance(conn: asyncpg.Connection | asyncpg.Pool, account: str) -> int:
    """The account's balance in micro-credits (0 for an unknown account)."""
    value = await conn.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE account = $1", account
    )
    return int(value)
