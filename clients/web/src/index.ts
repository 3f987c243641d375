/**
 * `@etter/pipeline-client`: the browser client of `etter.pipeline.v1.PipelineService`, spoken over
 * grpc-web (connect-web) to etter-server, whose tonic-web layer serves it on the gRPC port.
 *
 * Everything under `./gen` is generated from `proto/` by `scripts/codegen` (buf + protoc-gen-es);
 * never edit it by hand. This module re-exports the generated service, messages and enums, plus
 * the `google.rpc` error details the server attaches to errors (decode them with
 * `ConnectError.findDetails(BadRequestSchema)` and friends).
 */
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { bearerAuth, type TokenSource } from "./auth.js";
import { PipelineService } from "./gen/etter/pipeline/v1/pipeline_service_pb.js";

export * from "./gen/etter/pipeline/v1/pipeline_service_pb.js";
export * from "./gen/etter/pipeline/v1/resources_pb.js";
export * from "./gen/google/rpc/code_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
export * from "./gen/google/rpc/status_pb.js";

/** A typed client of `PipelineService`: one async method per RPC (`watchStatus` is an async iterable). */
export type PipelineClient = Client<typeof PipelineService>;

export { bearerAuth, tokenClaims, type TokenSource } from "./auth.js";
export * from "./client.js";
export * from "./csv.js";
export * from "./errors.js";

/**
 * Creates a `PipelineService` client that talks grpc-web to `baseUrl` (the server's origin, for
 * example `https://etter.example.com`) and authenticates every call with `token`.
 *
 * ```ts
 * const client = createPipelineClient("https://etter.example.com", jwt);
 * const { workflowId } = await client.push({ companyId: "liberty", roleName: "Claims Adjuster", ... });
 * for await (const msg of client.watchStatus({ scope: { case: "workflowId", value: workflowId } })) { ... }
 * ```
 */
export function createPipelineClient(baseUrl: string, token: TokenSource): PipelineClient {
  const transport = createGrpcWebTransport({
    baseUrl,
    interceptors: [bearerAuth(token)],
  });
  return createClient(PipelineService, transport);
}
