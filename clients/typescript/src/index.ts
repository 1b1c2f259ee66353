/**
 * The fleetwire TypeScript client: a typed JobService wrapper (retries, resumed Watch) and
 * offline verification.
 */
export { FleetwireClient, isTerminal, DEFAULT_ADDRESS } from "./client.ts";
export type { ClientOptions, JobSpecInit, WatchEvent } from "./client.ts";
export { Code, FleetwireError } from "./errors.ts";
export type { FieldViolation } from "./errors.ts";
export { DEFAULT_RETRY, NO_RETRIES, RETRYABLE_CODES, delayBeforeRetry } from "./retry.ts";
export type { RetryPolicy } from "./retry.ts";
export { FROM_START, cursorAfter, watchRequest } from "./watch_cursor.ts";
export type { WatchCursor } from "./watch_cursor.ts";
export {
  keyId,
  requestBytes,
  resultBytes,
  verifyJob,
  verifyJobWithKeys,
  verifySignature,
} from "./signing.ts";
export * from "./gen/fleetwire/v1/job_pb.ts";
export * from "./gen/fleetwire/v1/job_service_pb.ts";
