// The retry policy and the Watch cursor as pure logic, case by case (the same cases as the
// Python client's tests/unit/test_clients_python.py).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  Code,
  DEFAULT_RETRY,
  FROM_START,
  FleetwireError,
  NO_RETRIES,
  cursorAfter,
  delayBeforeRetry,
  watchRequest,
  type RetryPolicy,
} from "../src/index.ts";

const policy = (changes: Partial<RetryPolicy> = {}): RetryPolicy => ({ ...DEFAULT_RETRY, ...changes });
const error = (code: Code, retryDelayMs?: number) => new FleetwireError(code, "x", { retryDelayMs });

test("the server's RetryInfo delay is honoured exactly", () => {
  const p = policy({ maxAttempts: 4 });
  assert.equal(delayBeforeRetry(p, 1, error(Code.ResourceExhausted, 1500)), 1500);
  assert.equal(delayBeforeRetry(p, 3, error(Code.Unavailable, 250)), 250);
});

test("the server's delay is capped", () => {
  const p = policy({ maxServerDelayMs: 2000 });
  assert.equal(delayBeforeRetry(p, 1, error(Code.ResourceExhausted, 3_600_000)), 2000);
});

test("without RetryInfo the delay is jittered exponential backoff, capped", () => {
  const p = policy({ initialBackoffMs: 100, multiplier: 2, maxBackoffMs: 500, maxAttempts: 10 });
  for (const [attempt, ceiling] of [[1, 100], [2, 200], [3, 400], [4, 500], [9, 500]] as const) {
    const delays = Array.from({ length: 200 }, () => delayBeforeRetry(p, attempt, error(Code.Unavailable)));
    assert.ok(delays.every((d) => d !== undefined && d >= 0 && d <= ceiling), `${attempt}`);
    assert.ok(Math.max(...delays.map((d) => d ?? 0)) > ceiling * 0.8, `${attempt}: no jitter spread`);
  }
  assert.equal(delayBeforeRetry(p, 3, error(Code.Unavailable), { random: () => 0.5 }), 200);
});

test("no retry for final codes, out of attempts, or past the deadline", () => {
  const p = policy({ maxAttempts: 3 });
  for (const code of [Code.NotFound, Code.InvalidArgument, Code.DeadlineExceeded, Code.Unauthenticated]) {
    assert.equal(delayBeforeRetry(p, 1, error(code, 100)), undefined, Code[code]);
  }
  assert.equal(delayBeforeRetry(p, 3, error(Code.Unavailable, 100)), undefined);
  assert.equal(delayBeforeRetry(p, 1, error(Code.Unavailable, 2000), { timeLeftMs: 1000 }), undefined);
  assert.equal(delayBeforeRetry(p, 1, error(Code.Unavailable, 500), { timeLeftMs: 1000 }), 500);
  assert.equal(delayBeforeRetry(NO_RETRIES, 1, error(Code.Unavailable, 1)), undefined);
});

test("retryable is the set of retried codes", () => {
  assert.equal(error(Code.Unavailable).retryable, true);
  assert.equal(error(Code.ResourceExhausted).retryable, true);
  assert.equal(error(Code.NotFound).retryable, false);
});

test("the Watch cursor is the last chunk's attempt and sequence", () => {
  assert.deepEqual(watchRequest("job-1", FROM_START), { jobId: "job-1", afterAttempt: 0, afterSequence: 0n });
  const cursor = cursorAfter({ attempt: 2, sequence: 1n });
  assert.deepEqual(watchRequest("job-1", cursor), { jobId: "job-1", afterAttempt: 2, afterSequence: 1n });
});
