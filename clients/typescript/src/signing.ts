/**
 * The fleetwire signing scheme (docs/signing.md) in TypeScript: canonical, length-prefixed
 * bytes — not a protobuf encoding — and offline ed25519 verification of a finished job.
 *
 * Field: 4-byte big-endian length, then the body. Bodies: strings as UTF-8; counts, token
 * counts, max_tokens, attempt and times as 8-byte big-endian unsigned; the seed as 8-byte
 * big-endian two's complement (an empty body when unset); temperature and top_p as IEEE-754
 * binary32 big-endian; bools as one byte; digests as 32 raw bytes. Checked byte for byte
 * against the document's test vector by test/signing.test.ts.
 */
import { createHash } from "node:crypto";
import * as ed from "@noble/ed25519";
import type { Job, JobSpec } from "./gen/fleetwire/v1/job_pb.ts";
import { JobState } from "./gen/fleetwire/v1/job_pb.ts";
import type { NodeKey } from "./gen/fleetwire/v1/job_service_pb.ts";

export const REQUEST_TAG = "fleetwire.request.v1";
export const RESULT_TAG = "fleetwire.result.v1";
export const NODE_AUTH_TAG = "fleetwire.node-auth.v2";

const utf8 = new TextEncoder();

/** One field: the body's byte length (u32, big-endian), then the body. */
export function field(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, 4);
  return out;
}

/** An unsigned integer as an 8-byte big-endian body. */
export function u64(value: bigint | number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(value), false);
  return out;
}

/** A signed integer (the seed) as an 8-byte big-endian two's complement body. */
export function i64(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigInt64(0, value, false);
  return out;
}

/** A float as IEEE-754 binary32, big-endian (a double is rounded to the nearest binary32). */
export function f32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setFloat32(0, value, false);
  return out;
}

export function str(value: string): Uint8Array {
  return utf8.encode(value);
}

/** The domain tag, then every body, each as a field. */
export function canonical(tag: string, bodies: Uint8Array[]): Uint8Array {
  const fields = [field(str(tag)), ...bodies.map(field)];
  const out = new Uint8Array(fields.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of fields) {
    out.set(f, at);
    at += f.length;
  }
  return out;
}

export function sha256(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}

/** The canonical request bytes of a stored spec (``Job.spec``, defaults applied). */
export function requestBytes(jobId: string, spec: JobSpec): Uint8Array {
  const s = spec.sampling;
  const bodies: Uint8Array[] = [
    str(jobId),
    str(spec.model),
    str(spec.modelVersion),
    str(spec.prompt),
    u64(spec.messages.length),
  ];
  for (const m of spec.messages) bodies.push(str(m.role), str(m.content));
  const stop = s?.stop ?? [];
  bodies.push(
    u64(s?.maxTokens ?? 0),
    f32(s?.temperature ?? 0),
    f32(s?.topP ?? 0),
    s?.seed === undefined ? new Uint8Array(0) : i64(s.seed),
    u64(stop.length),
    ...stop.map(str),
    new Uint8Array([s?.ignoreEos ? 1 : 0]),
  );
  return canonical(REQUEST_TAG, bodies);
}

/** The bytes the node signed, rebuilt from the job; both digests are recomputed from
 * ``job.spec`` and ``job.output`` (the copies in ``job.signature`` are ignored). */
export function resultBytes(job: Job): Uint8Array {
  if (!job.spec || !job.signature) throw new Error(`job ${job.jobId} has no spec or signature`);
  const sig = job.signature;
  return canonical(RESULT_TAG, [
    str(job.jobId),
    u64(sig.attempt),
    str(sig.nodeId),
    str(job.spec.model),
    sha256(requestBytes(job.jobId, job.spec)),
    sha256(str(job.output)),
    u64(job.usage?.promptTokens ?? 0n),
    u64(job.usage?.completionTokens ?? 0n),
    u64(sig.finishedAtUnixMs),
  ]);
}

/** The key id: the first 16 hex digits of SHA-256 of the raw 32-byte public key. */
export function keyId(publicKey: Uint8Array): string {
  return Buffer.from(sha256(publicKey)).toString("hex").slice(0, 16);
}

export function fromHex(hex: string): Uint8Array {
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error("not a hex string");
  return new Uint8Array(Buffer.from(hex, "hex"));
}

/** True only when ``signature`` is a valid ed25519 signature (RFC 8032, strict decoding:
 * no ZIP-215 leniency) of ``message`` under ``publicKey``; malformed input is false. */
export async function verifySignature(
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    return await ed.verifyAsync(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}

/**
 * Offline check of a finished job: true only when it is SUCCEEDED, signed, and the signature
 * covers exactly its job id, spec, output, token counts, attempt, node id and finish time.
 * Pass the node's public key (raw or hex) from a source you trust; without one the key the
 * job names is used, which proves integrity but not who signed.
 */
export async function verifyJob(job: Job, publicKey?: Uint8Array | string): Promise<boolean> {
  const sig = job.signature;
  if (job.state !== JobState.SUCCEEDED || !sig || sig.signature.length === 0 || !job.spec) {
    return false;
  }
  const key =
    publicKey === undefined ? sig.publicKey : typeof publicKey === "string" ? fromHex(publicKey) : publicKey;
  if (key.length !== 32) throw new Error(`an ed25519 public key has 32 bytes, got ${key.length}`);
  return verifySignature(key, resultBytes(job), sig.signature);
}

/**
 * ``verifyJob`` with the key the mesh registered for the signing node
 * (``JobService.ListNodeKeys``; docs/signing.md, "Keys from the mesh"): true only when the
 * job's ``keyId`` names one of ``keys``, that key hashes to that id, the signature verifies
 * with it, and the result was signed before the key was revoked (if it was).
 */
export async function verifyJobWithKeys(job: Job, keys: NodeKey[]): Promise<boolean> {
  const sig = job.signature;
  if (!sig) return false;
  for (const key of keys) {
    if (key.keyId !== sig.keyId || keyId(key.publicKey) !== sig.keyId) continue;
    if (key.revokedAt) {
      const revokedMs = key.revokedAt.seconds * 1000n + BigInt(Math.floor(key.revokedAt.nanos / 1e6));
      if (sig.finishedAtUnixMs >= revokedMs) return false;
    }
    return verifyJob(job, key.publicKey);
  }
  return false;
}
