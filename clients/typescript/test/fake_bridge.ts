// A fake JobService on a real HTTP/2 gRPC server in this process (connect-node's server
// adapter), for offline tests of the client's own logic over the real wire: status codes
// and google.rpc details travel in the grpc-status / grpc-status-details-bin trailers
// exactly as the bridge sends them.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { DurationSchema, durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { JobService } from "../src/gen/fleetwire/v1/job_service_pb.ts";

export interface FakeBridge {
  /** host:port to give the client (plaintext). */
  address: string;
  close(): Promise<void>;
}

/** Serves ``impl`` (methods left out answer UNIMPLEMENTED) on 127.0.0.1, any free port. */
export async function fakeBridge(impl: Partial<ServiceImpl<typeof JobService>>): Promise<FakeBridge> {
  const server = http2.createServer(
    connectNodeAdapter({ routes: (router) => router.service(JobService, impl) }),
  );
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        sessions.forEach((session) => session.destroy());
        server.close(() => resolve());
      }),
  };
}

/** A refusal as the bridge's admission sends it: the code, and RetryInfo when given. */
export function refusal(code: Code, message: string, retryDelayMs?: number): ConnectError {
  const error = new ConnectError(message, code);
  if (retryDelayMs !== undefined) {
    const duration = toBinary(DurationSchema, durationFromMs(retryDelayMs));
    const retryInfo = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(duration).finish();
    error.details.push({ type: "google.rpc.RetryInfo", value: retryInfo });
  }
  return error;
}
