// The TypeScript signing code against docs/signing.md: every byte string and the signature
// of the test vector are read out of the document itself, so code and spec cannot drift.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { JobSchema, JobState, type Job } from "../src/gen/fleetwire/v1/job_pb.ts";
import { keyId, requestBytes, resultBytes, verifyJob, verifySignature } from "../src/signing.ts";
import { canonical, NODE_AUTH_TAG, sha256, str } from "../src/signing.ts";

const DOC = new URL("../../../docs/signing.md", import.meta.url);

/** The labelled code blocks of docs/signing.md, as hex with comments and spaces removed. */
function docHex(): Record<string, string> {
  const blocks: Record<string, string> = {};
  const text = readFileSync(DOC, "utf8");
  for (const m of text.matchAll(/^```text id=([\w-]+)\n([\s\S]*?)^```$/gm)) {
    blocks[m[1]!] = m[2]!.replace(/#.*$/gm, "").replace(/\s+/g, "");
  }
  return blocks;
}

const vector = docHex();
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const PUBLIC_KEY = new Uint8Array(Buffer.from(vector["public-key"]!, "hex"));

function vectorJob(): Job {
  return create(JobSchema, {
    jobId: "00000000-0000-4000-8000-000000000001",
    state: JobState.SUCCEEDED,
    spec: {
      model: "tiny-llama",
      prompt: "Write a haiku about a café.",
      sampling: { maxTokens: 16, temperature: 0.7, topP: 0.9, seed: 42n, stop: ["\n\n"] },
    },
    output: "Hello, fleet!",
    usage: { promptTokens: 12n, completionTokens: 5n },
    signature: {
      nodeId: "node-1",
      keyId: vector["key-id"],
      publicKey: PUBLIC_KEY,
      signature: new Uint8Array(Buffer.from(vector["signature"]!, "hex")),
      attempt: 1,
      finishedAtUnixMs: 1700000000000n,
    },
  });
}

test("the document has every block this test reads", () => {
  for (const id of ["public-key", "key-id", "request-bytes", "request-digest", "result-bytes",
    "signature", "chat-request-bytes", "chat-request-digest", "node-auth-bytes",
    "node-auth-signature", "output-digest"]) {
    assert.ok(vector[id], `docs/signing.md lacks the block ${id}`);
  }
});

test("request bytes and digest match the vector", () => {
  const job = vectorJob();
  const bytes = requestBytes(job.jobId, job.spec!);
  assert.equal(hex(bytes), vector["request-bytes"]);
  assert.equal(bytes.length, 189);
  assert.equal(hex(sha256(bytes)), vector["request-digest"]);
});

test("chat request bytes (no seed, ignore_eos) match the vector", () => {
  const job = create(JobSchema, {
    jobId: "00000000-0000-4000-8000-000000000002",
    spec: {
      model: "tiny-llama",
      modelVersion: "v1",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hi" },
      ],
      sampling: { maxTokens: 8, temperature: 0, topP: 1, ignoreEos: true },
    },
  });
  const bytes = requestBytes(job.jobId, job.spec!);
  assert.equal(hex(bytes), vector["chat-request-bytes"]);
  assert.equal(hex(sha256(bytes)), vector["chat-request-digest"]);
});

test("result bytes, key id and signature match the vector", async () => {
  const job = vectorJob();
  assert.equal(hex(sha256(str(job.output))), vector["output-digest"]);
  assert.equal(hex(resultBytes(job)), vector["result-bytes"]);
  assert.equal(keyId(PUBLIC_KEY), vector["key-id"]);
  assert.equal(await verifyJob(job, PUBLIC_KEY), true);
  assert.equal(await verifyJob(job, vector["public-key"]), true);
  assert.equal(await verifyJob(job), true); // with the key the job names
});

test("node-auth bytes and signature match the vector", async () => {
  const nonce = new Uint8Array(32).map((_, i) => 0x20 + i);
  const fields = [nonce, str("scheduler-a"), str("scheduler.example"), str("node-1"), PUBLIC_KEY];
  const bytes = canonical(NODE_AUTH_TAG, fields);
  assert.equal(hex(bytes), vector["node-auth-bytes"]);
  const signature = new Uint8Array(Buffer.from(vector["node-auth-signature"]!, "hex"));
  assert.equal(await verifySignature(PUBLIC_KEY, bytes, signature), true);
});

const tampers: Record<string, (job: Job) => void> = {
  output: (j) => { j.output += "!"; },
  "completion tokens": (j) => { j.usage!.completionTokens += 1n; },
  temperature: (j) => { j.spec!.sampling!.temperature = 0.8; },
  "seed unset": (j) => { j.spec!.sampling!.seed = undefined; },
  attempt: (j) => { j.signature!.attempt = 2; },
  "node id": (j) => { j.signature!.nodeId = "node-2"; },
  "finished at": (j) => { j.signature!.finishedAtUnixMs += 1n; },
  "job id": (j) => { j.jobId = "00000000-0000-4000-8000-000000000009"; },
  state: (j) => { j.state = JobState.FAILED; },
  signature: (j) => { j.signature!.signature[0]! ^= 1; },
};

for (const [name, tamper] of Object.entries(tampers)) {
  test(`a tampered ${name} fails verification`, async () => {
    const job = vectorJob();
    tamper(job);
    assert.equal(await verifyJob(job, PUBLIC_KEY), false);
  });
}

test("another key fails; a malformed key is an error, not a pass", async () => {
  const other = new Uint8Array(PUBLIC_KEY);
  other[0]! ^= 1;
  assert.equal(await verifyJob(vectorJob(), other), false);
  await assert.rejects(verifyJob(vectorJob(), "abcd"), /32 bytes/);
});
