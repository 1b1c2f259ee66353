/**
 * When to retry a failed call, and how long to wait first — the Python client's policy
 * (clients/python/fleetwire_client/retry.py), pure logic.
 *
 * Only UNAVAILABLE and RESOURCE_EXHAUSTED are retried: the bridge promises that neither
 * accepted anything (job_service.proto), so a retry cannot run a job twice. When the server
 * sent google.rpc.RetryInfo its delay is honoured exactly (never shortened; capped by
 * ``maxServerDelayMs``); otherwise the delay is exponential backoff with full jitter. A call
 * never sleeps past its own deadline.
 */
import { Code } from "@connectrpc/connect";
import type { FleetwireError } from "./errors.ts";

export const RETRYABLE_CODES: ReadonlySet<Code> = new Set([Code.Unavailable, Code.ResourceExhausted]);

/** How a client retries. ``maxAttempts`` counts the first try (1 disables retries). */
export interface RetryPolicy {
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
  maxServerDelayMs: number;
}

/** The defaults, as the Python client's ``RetryPolicy()``. */
export const DEFAULT_RETRY: Readonly<RetryPolicy> = Object.freeze({
  maxAttempts: 5,
  initialBackoffMs: 200,
  maxBackoffMs: 5_000,
  multiplier: 2,
  maxServerDelayMs: 60_000,
});

/** One try and no retry. */
export const NO_RETRIES: Readonly<RetryPolicy> = Object.freeze({ ...DEFAULT_RETRY, maxAttempts: 1 });

/**
 * Milliseconds to wait before try ``attempt + 1`` after try ``attempt`` (1-based) failed
 * with ``error``; undefined when the error is final: not retryable, out of attempts, or the
 * wait would not end before the call's deadline (``timeLeftMs`` away). ``random`` returns a
 * number in [0, 1) (default Math.random), for the jitter.
 */
export function delayBeforeRetry(
  policy: RetryPolicy,
  attempt: number,
  error: FleetwireError,
  opts: { timeLeftMs?: number; random?: () => number } = {},
): number | undefined {
  if (!RETRYABLE_CODES.has(error.code) || attempt >= policy.maxAttempts) return undefined;
  let delay: number;
  if (error.retryDelayMs !== undefined) {
    delay = Math.min(Math.max(error.retryDelayMs, 0), policy.maxServerDelayMs);
  } else {
    const ceiling = Math.min(
      policy.maxBackoffMs,
      policy.initialBackoffMs * policy.multiplier ** (attempt - 1),
    );
    delay = (opts.random ?? Math.random)() * ceiling;
  }
  if (opts.timeLeftMs !== undefined && delay >= opts.timeLeftMs) return undefined;
  return delay;
}

/** Waits ``ms``; rejects with the signal's reason as soon as ``signal`` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
