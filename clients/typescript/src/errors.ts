/**
 * Failed calls as one error type carrying the gRPC status code and the google.rpc details
 * the bridge sends (job_service.proto): ErrorInfo's stable ``reason``, RetryInfo's delay and
 * BadRequest's field violations. connect decodes the ``grpc-status-details-bin`` trailer (a
 * google.rpc.Status) into typed Any values; the three detail messages are small and stable,
 * so their few fields are read here from the wire format (RetryInfo's delay with
 * protobuf-es's own google.protobuf.Duration) instead of generating the googleapis protos.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { DurationSchema, durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { RETRYABLE_CODES } from "./retry.ts";

export { Code };

export interface FieldViolation {
  field: string;
  description: string;
}

/** A failed fleetwire call. ``code`` is the gRPC status code (``Code.NotFound``, ...). */
export class FleetwireError extends Error {
  readonly code: Code;
  /** ErrorInfo.reason, e.g. "NOT_FOUND" or "BACKEND_UNAVAILABLE"; "" when absent. */
  readonly reason: string;
  /** RetryInfo.retry_delay in milliseconds; undefined when the server sent none. */
  readonly retryDelayMs: number | undefined;
  /** BadRequest field violations (INVALID_ARGUMENT). */
  readonly violations: FieldViolation[];

  constructor(
    code: Code,
    message: string,
    details: { reason?: string; retryDelayMs?: number; violations?: FieldViolation[] } = {},
  ) {
    super(`${Code[code]}${details.reason ? ` (${details.reason})` : ""}: ${message}`);
    this.name = "FleetwireError";
    this.code = code;
    this.reason = details.reason ?? "";
    this.retryDelayMs = details.retryDelayMs;
    this.violations = details.violations ?? [];
  }

  /** UNAVAILABLE and RESOURCE_EXHAUSTED: nothing was accepted, a retry may succeed. */
  get retryable(): boolean {
    return RETRYABLE_CODES.has(this.code);
  }

  /** The FleetwireError standing for any error a call threw. */
  static from(err: unknown): FleetwireError {
    if (err instanceof FleetwireError) return err;
    const connect = ConnectError.from(err);
    const details: { reason?: string; retryDelayMs?: number; violations?: FieldViolation[] } = {};
    for (const detail of connect.details) {
      if (!("type" in detail)) continue;
      if (detail.type === "google.rpc.ErrorInfo") details.reason = readStrings(detail.value)[1];
      if (detail.type === "google.rpc.RetryInfo") details.retryDelayMs = readRetryDelay(detail.value);
      if (detail.type === "google.rpc.BadRequest") details.violations = readViolations(detail.value);
    }
    return new FleetwireError(connect.code, connect.rawMessage, details);
  }
}

/** The string fields of a message by field number (others skipped). */
function readStrings(bytes: Uint8Array): Record<number, string> {
  const out: Record<number, string> = {};
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [no, type] = reader.tag();
    if (type === WireType.LengthDelimited && (no === 1 || no === 2)) out[no] = reader.string();
    else reader.skip(type, no);
  }
  return out;
}

/** google.rpc.RetryInfo's ``retry_delay`` (field 1, a Duration) in milliseconds. */
function readRetryDelay(bytes: Uint8Array): number {
  const reader = new BinaryReader(bytes);
  let ms = 0;
  while (reader.pos < reader.len) {
    const [no, type] = reader.tag();
    if (no === 1 && type === WireType.LengthDelimited) {
      ms = durationMs(fromBinary(DurationSchema, reader.bytes()));
    } else reader.skip(type, no);
  }
  return ms;
}

function readViolations(bytes: Uint8Array): FieldViolation[] {
  const out: FieldViolation[] = [];
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [no, type] = reader.tag();
    if (no === 1 && type === WireType.LengthDelimited) {
      const v = readStrings(reader.bytes());
      out.push({ field: v[1] ?? "", description: v[2] ?? "" });
    } else reader.skip(type, no);
  }
  return out;
}
