// The client's retries and Watch resumption over the real gRPC wire, offline: a fake
// JobService on an in-process HTTP/2 server (fake_bridge.ts) refuses, drops and resumes as
// the bridge does, and records what the client sent.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  FleetwireClient,
  FleetwireError,
  JobSchema,
  JobState,
  NO_RETRIES,
  TokenChunkSchema,
  type ClientOptions,
  type TokenChunk,
  type WatchRequest,
} from "../src/index.ts";
import { fakeBridge, refusal, type FakeBridge } from "./fake_bridge.ts";

const open: { bridge: FakeBridge; client: FleetwireClient }[] = [];
after(async () => {
  for (const { bridge, client } of open) {
    client.close();
    await bridge.close();
  }
});

async function clientOf(
  impl: Parameters<typeof fakeBridge>[0],
  options: ClientOptions = {},
): Promise<FleetwireClient> {
  const bridge = await fakeBridge(impl);
  const client = new FleetwireClient({ address: bridge.address, insecure: true, ...options });
  open.push({ bridge, client });
  return client;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test("a RetryInfo refusal is retried after the server's delay, with the same request id", async () => {
  const tries: { at: number; requestId: string }[] = [];
  const client = await clientOf({
    submit(request) {
      tries.push({ at: Date.now(), requestId: request.job?.clientRequestId ?? "" });
      if (tries.length < 3) throw refusal(Code.ResourceExhausted, "queue full", 250);
      return { job: { jobId: "job-1", state: JobState.QUEUED, spec: request.job } };
    },
  });
  const job = await client.submit({ model: "m", prompt: "p" });
  assert.equal(job.jobId, "job-1");
  assert.equal(tries.length, 3);
  const [first, ...rest] = tries;
  assert.match(first!.requestId, UUID);
  assert.ok(rest.every((t) => t.requestId === first!.requestId), JSON.stringify(tries));
  for (let i = 1; i < tries.length; i++) {
    const gap = tries[i]!.at - tries[i - 1]!.at;
    assert.ok(gap >= 240, `try ${i + 1} came ${gap} ms after the one before, not after RetryInfo's 250 ms`);
  }

  tries.length = 0;
  await client.submit({ model: "m", prompt: "p", clientRequestId: "mine" });
  assert.deepEqual(tries.map((t) => t.requestId), ["mine", "mine", "mine"]);
});

test("UNAVAILABLE without RetryInfo is retried with backoff; final codes are not", async () => {
  let statusCalls = 0;
  let cancelCalls = 0;
  const client = await clientOf(
    {
      status(request) {
        statusCalls++;
        if (statusCalls < 3) throw refusal(Code.Unavailable, "backend down");
        return { job: { jobId: request.jobId, state: JobState.RUNNING } };
      },
      cancel() {
        cancelCalls++;
        throw refusal(Code.NotFound, "no such job", 10);
      },
    },
    { retry: { initialBackoffMs: 20 } },
  );
  assert.equal((await client.status("job-2")).state, JobState.RUNNING);
  assert.equal(statusCalls, 3);
  await assert.rejects(client.cancel("job-3"), (err) => {
    assert.ok(err instanceof FleetwireError);
    assert.equal(err.code, Code.NotFound);
    return true;
  });
  assert.equal(cancelCalls, 1);
});

test("retries stop at maxAttempts, before a wait past the deadline, and with NO_RETRIES", async () => {
  let calls = 0;
  const impl = {
    status() {
      calls++;
      throw refusal(Code.Unavailable, "down", calls === 1 ? 1 : 5000);
    },
  };
  const deadlined = await clientOf(impl, { timeoutMs: 1000 });
  const started = Date.now();
  await assert.rejects(deadlined.status("j"), (err) => err instanceof FleetwireError && err.code === Code.Unavailable);
  // The second refusal asks for 5 s, past the 1 s deadline: no wait, the error at once.
  assert.equal(calls, 2);
  assert.ok(Date.now() - started < 800, `${Date.now() - started} ms`);

  calls = 0;
  const limited = await clientOf(
    { status: () => { calls++; throw refusal(Code.Unavailable, "down"); } },
    { retry: { maxAttempts: 3, initialBackoffMs: 5 } },
  );
  await assert.rejects(limited.status("j"));
  assert.equal(calls, 3);

  calls = 0;
  const single = await clientOf(
    { status: () => { calls++; throw refusal(Code.ResourceExhausted, "full", 1); } },
    { retry: NO_RETRIES },
  );
  await assert.rejects(single.status("j"), (err) => err instanceof FleetwireError && err.retryDelayMs === 1);
  assert.equal(calls, 1);
});

// The job's chunks as a node produced them: attempt 1 streamed three and failed over,
// attempt 2 four and succeeded.
const CHUNKS: TokenChunk[] = [
  ...["a", "b", "c"].map((text, i) => create(TokenChunkSchema, { attempt: 1, sequence: BigInt(i + 1), text })),
  ...["w", "x", "y", "z"].map((text, i) => create(TokenChunkSchema, { attempt: 2, sequence: BigInt(i + 1), text })),
];

/** The bridge's rule (broker_bridge/watch_output.py, WatchCursor.passes). */
function passes(request: WatchRequest, chunk: TokenChunk): boolean {
  if (request.afterAttempt === 0) return chunk.sequence > request.afterSequence;
  if (chunk.attempt !== request.afterAttempt) return chunk.attempt > request.afterAttempt;
  return chunk.sequence > request.afterSequence;
}

test("a dropped Watch resumes after the last chunk's attempt and sequence", async () => {
  const requests: { afterAttempt: number; afterSequence: bigint }[] = [];
  const client = await clientOf(
    {
      async *watch(request) {
        requests.push({ afterAttempt: request.afterAttempt, afterSequence: request.afterSequence });
        yield { event: { case: "job", value: create(JobSchema, { jobId: request.jobId, state: JobState.RUNNING }) } };
        // The first stream drops right after attempt 1's last chunk, before the retry.
        const visible = requests.length === 1 ? CHUNKS.slice(0, 3) : CHUNKS;
        for (const chunk of visible.filter((c) => passes(request, c))) {
          yield { event: { case: "chunk", value: chunk } };
        }
        if (requests.length === 1) throw refusal(Code.Unavailable, "stream reset");
        yield {
          event: { case: "job", value: create(JobSchema, { jobId: request.jobId, state: JobState.SUCCEEDED, attempts: 2 }) },
        };
      },
    },
    { retry: { initialBackoffMs: 10 } },
  );
  const tokens: string[] = [];
  const states: JobState[] = [];
  for await (const event of client.watch("job-4", { timeoutMs: 10_000 })) {
    if (event.kind === "token") tokens.push(`${event.chunk.attempt}.${event.chunk.sequence}:${event.chunk.text}`);
    else states.push(event.job.state);
  }
  assert.deepEqual(requests, [
    { afterAttempt: 0, afterSequence: 0n },
    { afterAttempt: 1, afterSequence: 3n },
  ]);
  assert.deepEqual(tokens, ["1.1:a", "1.2:b", "1.3:c", "2.1:w", "2.2:x", "2.3:y", "2.4:z"]);
  assert.deepEqual(states, [JobState.RUNNING, JobState.RUNNING, JobState.SUCCEEDED]);
});

test("a Watch starts after the caller's cursor, and ends on final errors or its deadline", async () => {
  const requests: { afterAttempt: number; afterSequence: bigint }[] = [];
  let mode: "hang" | "gone" = "gone";
  const client = await clientOf({
    async *watch(request, context) {
      requests.push({ afterAttempt: request.afterAttempt, afterSequence: request.afterSequence });
      if (mode === "gone") throw refusal(Code.NotFound, "no such job");
      yield { event: { case: "job", value: create(JobSchema, { jobId: request.jobId, state: JobState.QUEUED }) } };
      await new Promise((resolve) => context.signal.addEventListener("abort", resolve));
    },
  });
  await assert.rejects(
    async () => {
      for await (const _ of client.watch("job-5", { afterAttempt: 2, afterSequence: 7n })) void _;
    },
    (err) => err instanceof FleetwireError && err.code === Code.NotFound,
  );
  assert.deepEqual(requests, [{ afterAttempt: 2, afterSequence: 7n }]);

  mode = "hang";
  const started = Date.now();
  await assert.rejects(
    async () => {
      for await (const _ of client.watch("job-6", { timeoutMs: 300 })) void _;
    },
    (err) => err instanceof FleetwireError && err.code === Code.DeadlineExceeded,
  );
  assert.ok(Date.now() - started < 3000);
});
