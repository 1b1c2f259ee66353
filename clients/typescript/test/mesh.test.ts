// The TypeScript client against a live mesh: real bridge, scheduler and vLLM nodes over
// gRPC/HTTP/2. tests/e2e/test_clients_typescript.py starts the mesh and runs this file with
//   FLEETWIRE_ADDRESS         the bridge (host:port)
//   FLEETWIRE_API_KEY         a real API key of the mesh (sent by the client by default)
//   FLEETWIRE_TEST_NODE_KEYS  {"node-1": "<public key hex>", ...} — the pinned node keys
//   FLEETWIRE_TEST_LIMITED_API_KEY  a key of a tenant whose rate limit is 0.5 jobs/s, burst 1
// Without them the tests are skipped.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { clone } from "@bufbuild/protobuf";
import {
  Code,
  FleetwireClient,
  FleetwireError,
  JobSchema,
  JobState,
  NO_RETRIES,
  PriorityClass,
  verifyJob,
  type Job,
} from "../src/index.ts";

const NODE_KEYS: Record<string, string> = JSON.parse(process.env.FLEETWIRE_TEST_NODE_KEYS ?? "{}");
const skip = !process.env.FLEETWIRE_ADDRESS && "FLEETWIRE_ADDRESS is not set (no live mesh)";
const WAIT_MS = 240_000;
const LIMITED_KEY = process.env.FLEETWIRE_TEST_LIMITED_API_KEY;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const clients: FleetwireClient[] = [];
function connect(options: ConstructorParameters<typeof FleetwireClient>[0] = {}): FleetwireClient {
  const client = new FleetwireClient(options);
  clients.push(client);
  return client;
}
after(() => clients.forEach((c) => c.close()));

function nodeKey(job: Job): string {
  const key = NODE_KEYS[job.signature?.nodeId ?? ""];
  assert.ok(key, `no pinned key for node ${job.signature?.nodeId}`);
  return key;
}

test("submit, stream tokens, status and verify the signature", { skip }, async () => {
  const client = connect();
  const accepted = await client.submit({
    model: "tiny-llama",
    prompt: "the TypeScript client says",
    sampling: { maxTokens: 24, seed: 7n },
    priority: PriorityClass.URGENT,
  });
  assert.equal(accepted.state, JobState.QUEUED);

  const chunks: { attempt: number; text: string; tokens: bigint }[] = [];
  let last: Job | undefined;
  for await (const event of client.watch(accepted.jobId, { timeoutMs: WAIT_MS })) {
    if (event.kind === "token") {
      const { attempt, text, tokenCount } = event.chunk;
      chunks.push({ attempt, text, tokens: BigInt(tokenCount) });
    } else last = event.job;
  }
  assert.equal(last?.state, JobState.SUCCEEDED);

  const job = await client.status(accepted.jobId);
  assert.equal(job.state, JobState.SUCCEEDED);
  // The chunks of the attempt that produced the result are all of the output: the mesh
  // writes a job's chunks before it finalises the job, and Watch sends them before the end.
  const final = chunks.filter((c) => c.attempt === job.attempts);
  assert.ok(final.length > 0, "no token chunks were streamed");
  assert.equal(final.map((c) => c.text).join(""), job.output);
  assert.equal(
    final.reduce((sum, c) => sum + c.tokens, 0n),
    job.usage?.completionTokens ?? 0n,
  );
  assert.equal(await verifyJob(job, nodeKey(job)), true);

  const tampered = clone(JobSchema, job);
  tampered.output += " (edited)";
  assert.equal(await verifyJob(tampered, nodeKey(job)), false);
  const recounted = clone(JobSchema, job);
  recounted.usage!.completionTokens += 1n;
  assert.equal(await verifyJob(recounted, nodeKey(job)), false);
  const other = Object.entries(NODE_KEYS).find(([node]) => node !== job.signature?.nodeId);
  assert.ok(other);
  assert.equal(await verifyJob(job, other[1]), false);
  // With the key the mesh registered for the node, fetched by the client itself.
  const keys = await client.nodeKeys(job.signature!.nodeId);
  assert.ok(keys.some((key) => key.keyId === job.signature!.keyId));
  assert.equal(await client.verify(job), true);
  assert.equal(await client.verify(tampered), false);
});

test("cancel a running job", { skip }, async () => {
  const client = connect();
  let cancelled: Job | undefined;
  let final: Job | undefined;
  // 2,000 tokens (the e2e nodes serve a 2,048-token context) take about 4 s on an idle
  // node: on a loaded machine a stall of the mesh can still let the job finish before the
  // cancel lands, so cancel as soon as the job is on a node (DISPATCHED or RUNNING, or its
  // first token), and try up to 5 jobs.
  for (let attempt = 0; attempt < 5; attempt++) {
    const { jobId } = await client.submit({
      model: "tiny-llama",
      prompt: "a story that never ends",
      sampling: { maxTokens: 2000, ignoreEos: true },
    });
    cancelled = undefined;
    final = undefined;
    for await (const event of client.watch(jobId, { timeoutMs: WAIT_MS })) {
      const onNode =
        event.kind === "token" ||
        event.job.state === JobState.DISPATCHED ||
        event.job.state === JobState.RUNNING;
      if (onNode && !cancelled) cancelled = await client.cancel(jobId, "from ts");
      if (event.kind === "state") final = event.job;
    }
    if (cancelled?.state !== JobState.SUCCEEDED) break;
  }
  assert.equal(cancelled?.state, JobState.CANCELLED);
  assert.equal(final?.state, JobState.CANCELLED);
  assert.equal(final?.error?.reason, "CANCELLED_BY_CLIENT");
  assert.ok((final?.usage?.completionTokens ?? 0n) < 2000n);
});

test("errors carry the status code and the server's details", { skip }, async () => {
  const client = connect();
  await assert.rejects(client.status("00000000-0000-4000-8000-00000000dead"), (err) => {
    assert.ok(err instanceof FleetwireError);
    assert.equal(err.code, Code.NotFound);
    assert.ok(err.reason);
    return true;
  });
  await assert.rejects(
    client.submit({ model: "no-such-model", prompt: "x", sampling: { maxTokens: 1 } }),
    (err) => {
      assert.ok(err instanceof FleetwireError);
      assert.equal(err.code, Code.InvalidArgument);
      assert.ok(err.violations.some((v) => v.field === "job.model"), JSON.stringify(err.violations));
      return true;
    },
  );
  const stranger = connect({ apiKey: "fw_000000000000_bogus" });
  await assert.rejects(stranger.status("00000000-0000-4000-8000-00000000dead"), (err) => {
    assert.ok(err instanceof FleetwireError);
    assert.equal(err.code, Code.Unauthenticated);
    assert.equal(err.reason, "API_KEY_INVALID");
    return true;
  });
});

test("a refusal with RetryInfo from admission is retried after its delay and succeeds", {
  skip: skip || (!LIMITED_KEY && "FLEETWIRE_TEST_LIMITED_API_KEY is not set"),
}, async () => {
  // The tenant's bucket holds one job and refills at 0.5 jobs/s: a second Submit right
  // after the first is refused by the bridge's admission (RESOURCE_EXHAUSTED, RetryInfo
  // with the wait until a token is back).
  const spec = { model: "tiny-llama", prompt: "rate limited", sampling: { maxTokens: 4 } };
  const strict = connect({ apiKey: LIMITED_KEY, retry: NO_RETRIES });
  let refusal: FleetwireError | undefined;
  let refusedAt = 0;
  for (let i = 0; i < 3 && !refusal; i++) {
    await strict.submit(spec).catch((err: unknown) => {
      assert.ok(err instanceof FleetwireError, String(err));
      refusal = err;
      refusedAt = Date.now();
    });
  }
  assert.ok(refusal, "the bucket never ran dry");
  assert.equal(refusal.code, Code.ResourceExhausted);
  assert.equal(refusal.reason, "TENANT_RATE_LIMITED");
  assert.ok((refusal.retryDelayMs ?? 0) > 500, `RetryInfo delay ${refusal.retryDelayMs} ms`);

  // At once again, with the default policy: refused, waited out as RetryInfo said, admitted.
  // No token is back before the refusal's delay has passed, so an admission earlier than
  // that would mean the refusal was not waited out.
  const patient = connect({ apiKey: LIMITED_KEY });
  const job = await patient.submit(spec);
  const after = Date.now() - refusedAt;
  assert.equal(job.state, JobState.QUEUED);
  assert.match(job.spec?.clientRequestId ?? "", UUID);
  const delay = refusal.retryDelayMs ?? 0;
  assert.ok(after >= delay - 50, `admitted ${after} ms after a refusal asking for ${delay} ms`);
  assert.equal((await patient.wait(job.jobId, { timeoutMs: WAIT_MS })).state, JobState.SUCCEEDED);
});
