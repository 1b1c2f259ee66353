/**
 * A small typed wrapper over the generated JobService client, speaking real gRPC over
 * HTTP/2 (connect-node's gRPC transport). Every call has a deadline that bounds it, retries
 * included; UNAVAILABLE and RESOURCE_EXHAUSTED are retried as the Python client does
 * (retry.ts: the server's RetryInfo delay, else jittered exponential backoff); a dropped
 * Watch is resumed after the last chunk's attempt and sequence (watch_cursor.ts). Every
 * failure is thrown as a FleetwireError (errors.ts) carrying the status code and the
 * server's details.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  JobSpecSchema,
  JobState,
  type Job,
  type JobSpec,
} from "./gen/fleetwire/v1/job_pb.ts";
import { JobService, type NodeKey, type TokenChunk } from "./gen/fleetwire/v1/job_service_pb.ts";
import { verifyJobWithKeys } from "./signing.ts";
import { Code, FleetwireError } from "./errors.ts";
import { DEFAULT_RETRY, delayBeforeRetry, sleep, type RetryPolicy } from "./retry.ts";
import { cursorAfter, watchRequest, type WatchCursor } from "./watch_cursor.ts";

export const DEFAULT_ADDRESS = "127.0.0.1:50051";

const TRUE = new Set(["1", "true", "yes", "on"]);

/** TLS unless plaintext is asked for; the CA from the options or $FLEETWIRE_CA_FILE. */
function channelSecurity(options: ClientOptions): { tls: boolean; ca?: Buffer } {
  if (options.insecure) return { tls: false };
  const caFile = options.caFile ?? (process.env.FLEETWIRE_CA_FILE || undefined);
  if (caFile) return { tls: true, ca: readFileSync(caFile) };
  const envInsecure = TRUE.has((process.env.FLEETWIRE_INSECURE ?? "").toLowerCase());
  if (options.insecure === undefined && envInsecure) return { tls: false };
  return { tls: true };
}

export interface ClientOptions {
  /** host:port of a broker bridge; default $FLEETWIRE_ADDRESS or 127.0.0.1:50051. */
  address?: string;
  /** Sent as ``authorization: Bearer <key>``; default $FLEETWIRE_API_KEY. */
  apiKey?: string;
  /**
   * PEM CA certificates the bridge's TLS certificate must chain to (a dev mesh's own CA,
   * made by ``fleetwire certs``); default $FLEETWIRE_CA_FILE, else the system's roots.
   */
  caFile?: string;
  /**
   * Plaintext HTTP/2 instead of TLS, for a mesh that serves no TLS on purpose (tests,
   * benchmarks); default $FLEETWIRE_INSECURE when no CA is given. TLS otherwise.
   */
  insecure?: boolean;
  /** Deadline of each unary call in milliseconds, retries included (default 30 000). */
  timeoutMs?: number;
  /**
   * How failed calls are retried; fields left out keep DEFAULT_RETRY's (5 tries in all).
   * ``NO_RETRIES`` turns retries off.
   */
  retry?: Partial<RetryPolicy>;
}

/** What ``watch`` yields: token chunks, and the job whenever its state changes. */
export type WatchEvent =
  | { kind: "token"; chunk: TokenChunk }
  | { kind: "state"; job: Job };

/** A job spec as plain data, e.g. ``{ model: "tiny-llama", prompt: "hi", sampling: { maxTokens: 16 } }``. */
export type JobSpecInit = MessageInitShape<typeof JobSpecSchema>;

const TERMINAL = new Set<JobState>([
  JobState.SUCCEEDED,
  JobState.FAILED,
  JobState.EXPIRED,
  JobState.CANCELLED,
  JobState.DEAD_LETTERED,
]);

/** True for the five states that never change again. */
export function isTerminal(state: JobState): boolean {
  return TERMINAL.has(state);
}

/** How long a client trusts the keys it fetched for a node before asking again. */
const KEY_RECHECK_MS = 5 * 60 * 1000;

/**
 * One HTTP/2 connection to a bridge (opened on first use, kept alive with PINGs every 10 s
 * like the Python clients, closed after a minute idle). Call ``close()`` when done: an open
 * connection keeps Node's event loop alive.
 */
export class FleetwireClient {
  private readonly rpc: Client<typeof JobService>;
  private readonly sessions: Http2SessionManager;
  private readonly timeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly nodeKeyCache = new Map<string, { at: number; keys: NodeKey[] }>();

  constructor(options: ClientOptions = {}) {
    const address = options.address ?? process.env.FLEETWIRE_ADDRESS ?? DEFAULT_ADDRESS;
    const apiKey = options.apiKey ?? process.env.FLEETWIRE_API_KEY;
    const authorize: Interceptor = (next) => (req) => {
      if (apiKey) req.header.set("authorization", `Bearer ${apiKey}`);
      return next(req);
    };
    const security = channelSecurity(options);
    const baseUrl = `${security.tls ? "https" : "http"}://${address}`;
    this.sessions = new Http2SessionManager(
      baseUrl,
      { pingIntervalMs: 10_000, pingTimeoutMs: 5_000, idleConnectionTimeoutMs: 60_000 },
      security.ca ? { ca: security.ca } : {},
    );
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.sessions,
      interceptors: [authorize],
    });
    this.rpc = createClient(JobService, transport);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
  }

  /** Closes the connection; calls still running fail with Code.Canceled. Idempotent. */
  close(): void {
    this.sessions.abort();
  }

  /**
   * Submits a job; returns it as accepted (QUEUED or later; terminal in SYNC mode). A spec
   * without ``clientRequestId`` gets a fresh UUID, and every retry sends the same one, so
   * a retried Submit returns the job of the first try instead of running it twice (the
   * bridge's idempotency). ``timeoutMs`` bounds the call, retries included.
   */
  async submit(spec: JobSpecInit | JobSpec, opts: { timeoutMs?: number } = {}): Promise<Job> {
    const job = create(JobSpecSchema, spec);
    if (!job.clientRequestId) job.clientRequestId = randomUUID();
    return this.unaryJob((timeoutMs) => this.rpc.submit({ job }, { timeoutMs }), opts.timeoutMs);
  }

  /** The job's current state, with output and signature when SUCCEEDED. */
  async status(jobId: string): Promise<Job> {
    return this.unaryJob((timeoutMs) => this.rpc.status({ jobId }, { timeoutMs }));
  }

  /** Cancels a job; a terminal job is returned unchanged. */
  async cancel(jobId: string, reason = ""): Promise<Job> {
    return this.unaryJob((timeoutMs) => this.rpc.cancel({ jobId, reason }, { timeoutMs }));
  }

  /**
   * The job's current state first, then token chunks and every state change; ends after a
   * terminal state. A dropped stream (UNAVAILABLE) is resumed per the retry policy after
   * the attempt and sequence of the last chunk received, so a retry's new attempt arrives
   * whole from its chunk 1; the resumed stream repeats the current state first.
   * ``afterAttempt``/``afterSequence`` start after a chunk the caller already has
   * (``afterAttempt`` 0: after that sequence in any attempt). ``timeoutMs`` (default none)
   * bounds the whole stream, resumptions included; ``signal`` stops it.
   */
  async *watch(
    jobId: string,
    opts: {
      afterSequence?: bigint;
      afterAttempt?: number;
      timeoutMs?: number;
      signal?: AbortSignal;
    } = {},
  ): AsyncGenerator<WatchEvent> {
    // The deadline is an unref'd timer of our own: connect's per-call timer outlives a
    // stream left early and would keep Node's event loop alive for the whole timeout.
    const deadlineAt = opts.timeoutMs === undefined ? undefined : Date.now() + opts.timeoutMs;
    const deadline = opts.timeoutMs === undefined ? undefined : AbortSignal.timeout(opts.timeoutMs);
    const signals = [opts.signal, deadline].filter((s): s is AbortSignal => s !== undefined);
    const signal = signals.length ? AbortSignal.any(signals) : undefined;
    let cursor: WatchCursor = { attempt: opts.afterAttempt ?? 0, sequence: opts.afterSequence ?? 0n };
    let failures = 0;
    const stopped = (err: unknown): FleetwireError => {
      if (deadline?.aborted) {
        return new FleetwireError(Code.DeadlineExceeded, `watch ${jobId}: deadline exceeded`);
      }
      return FleetwireError.from(err);
    };
    for (;;) {
      let error: FleetwireError;
      try {
        const stream = this.rpc.watch(watchRequest(jobId, cursor), { signal });
        for await (const response of stream) {
          const event = response.event;
          if (event.case === "chunk") {
            failures = 0;
            cursor = cursorAfter(event.value);
            yield { kind: "token", chunk: event.value };
          } else if (event.case === "job") {
            failures = 0;
            yield { kind: "state", job: event.value };
            if (isTerminal(event.value.state)) return;
          }
        }
        return;
      } catch (err) {
        error = stopped(err);
        if (signal?.aborted) throw error;
      }
      failures += 1;
      const timeLeftMs = deadlineAt === undefined ? undefined : deadlineAt - Date.now();
      const delay = delayBeforeRetry(this.retry, failures, error, { timeLeftMs });
      if (delay === undefined) throw error;
      try {
        await sleep(delay, signal);
      } catch (err) {
        throw stopped(err);
      }
    }
  }

  /** Follows the job until it is terminal and returns it. */
  async wait(jobId: string, opts: { timeoutMs?: number } = {}): Promise<Job> {
    for await (const event of this.watch(jobId, opts)) {
      if (event.kind === "state" && isTerminal(event.job.state)) return event.job;
    }
    return this.status(jobId);
  }

  /** Every key the mesh registered for a node, newest first (ListNodeKeys). */
  async nodeKeys(nodeId: string): Promise<NodeKey[]> {
    const response = await this.unary((timeoutMs) => this.rpc.listNodeKeys({ nodeId }, { timeoutMs }));
    return response.keys;
  }

  /**
   * Offline check of a finished job's signature with the key the mesh registered for its
   * node (not the key the job names); the keys are fetched once per node and again after
   * five minutes or for a key id not seen yet.
   */
  async verify(job: Job): Promise<boolean> {
    const sig = job.signature;
    if (!sig || sig.signature.length === 0) return false;
    const cached = this.nodeKeyCache.get(sig.nodeId);
    let keys = cached && Date.now() - cached.at < KEY_RECHECK_MS ? cached.keys : undefined;
    if (!keys?.some((key) => key.keyId === sig.keyId)) {
      keys = await this.nodeKeys(sig.nodeId);
      this.nodeKeyCache.set(sig.nodeId, { at: Date.now(), keys });
    }
    return verifyJobWithKeys(job, keys);
  }

  /**
   * ``call`` with the deadline ``timeoutMs`` (default the client's) over all its tries,
   * retried per the policy; each try gets the time that is left.
   */
  private async unary<T>(call: (timeoutMs: number) => Promise<T>, timeoutMs?: number): Promise<T> {
    const deadlineAt = Date.now() + (timeoutMs ?? this.timeoutMs);
    for (let attempt = 1; ; attempt++) {
      let error: FleetwireError;
      try {
        return await call(Math.max(deadlineAt - Date.now(), 1));
      } catch (err) {
        error = FleetwireError.from(err);
      }
      const delay = delayBeforeRetry(this.retry, attempt, error, {
        timeLeftMs: deadlineAt - Date.now(),
      });
      if (delay === undefined) throw error;
      await sleep(delay);
    }
  }

  private async unaryJob(
    call: (timeoutMs: number) => Promise<{ job?: Job }>,
    timeoutMs?: number,
  ): Promise<Job> {
    const response = await this.unary(call, timeoutMs);
    if (!response.job) throw new Error("the server answered without a job");
    return response.job;
  }
}
