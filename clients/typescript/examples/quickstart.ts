// Submit a job, stream its tokens, verify the node's signature offline.
//
//   FLEETWIRE_ADDRESS=127.0.0.1:50051 FLEETWIRE_API_KEY=fwk_... \
//     npx tsx clients/typescript/examples/quickstart.ts [NODE_PUBLIC_KEY_HEX ...]
//
// Pass the public keys of the nodes you trust (`fleetwire keys show --file node.key` prints
// one); without any, the key named by the job itself is used (integrity only).
import { FleetwireClient, JobState, verifyJob } from "../src/index.ts";

const trustedKeys = process.argv.slice(2);
const client = new FleetwireClient(); // address and API key from the environment

const job = await client.submit({
  model: "tiny-llama",
  prompt: "Once upon a time",
  sampling: { maxTokens: 32 },
});
console.log(`submitted ${job.jobId} (${JobState[job.state]})`);

let midLine = false; // tokens print without newlines; state changes get lines of their own
for await (const event of client.watch(job.jobId, { timeoutMs: 300_000 })) {
  if (event.kind === "token") {
    process.stdout.write(event.chunk.text);
    midLine = true;
  } else {
    console.log(`${midLine ? "\n" : ""}[${JobState[event.job.state]}]`);
    midLine = false;
  }
}

const result = await client.status(job.jobId);
client.close();
const signature = result.signature;
if (!signature) {
  console.log(`no signed result: ${JobState[result.state]} ${result.error?.reason}`);
  process.exit(1);
}
let verified = false;
for (const key of trustedKeys.length ? trustedKeys : [undefined]) {
  verified ||= await verifyJob(result, key);
}
console.log(
  `${result.usage?.completionTokens} tokens by ${signature.nodeId} (key ${signature.keyId}): ` +
    `signature ${verified ? "verified" : "INVALID"}`,
);
process.exit(verified ? 0 : 1);
