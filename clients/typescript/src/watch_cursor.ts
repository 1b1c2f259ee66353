/**
 * Where a resumed Watch picks up: the attempt and sequence of the last chunk received.
 *
 * Sequence numbers restart at 1 with every attempt of a job, so a cursor of a sequence alone
 * (``afterSequence``) would make a Watch that resumes after a retry started skip that
 * attempt's first chunks. The bridge reads the pair: it sends a chunk when its
 * ``(attempt, sequence)`` comes after ``(afterAttempt, afterSequence)``; with ``afterAttempt``
 * 0 it compares sequences alone (what older clients send). Pure logic, as the Python
 * client's watch_cursor.py.
 */
import type { TokenChunk } from "./gen/fleetwire/v1/job_service_pb.ts";

export interface WatchCursor {
  readonly attempt: number;
  readonly sequence: bigint;
}

/** The cursor of a Watch that wants every chunk. */
export const FROM_START: WatchCursor = Object.freeze({ attempt: 0, sequence: 0n });

/** The cursor once ``chunk`` was received: that chunk's own place. */
export function cursorAfter(chunk: Pick<TokenChunk, "attempt" | "sequence">): WatchCursor {
  return { attempt: chunk.attempt, sequence: chunk.sequence };
}

/** The fields of the WatchRequest that resumes ``jobId``'s stream after ``cursor``. */
export function watchRequest(
  jobId: string,
  cursor: WatchCursor,
): { jobId: string; afterAttempt: number; afterSequence: bigint } {
  return { jobId, afterAttempt: cursor.attempt, afterSequence: cursor.sequence };
}
