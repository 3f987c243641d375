/**
 * `@etter/pipeline-client/node`: a transport for Node.js, speaking gRPC over HTTP/2 to
 * etter-server with TLS options a browser does not need: a private CA, a client certificate (for
 * a server that requires one, `server.tls.client_ca_file`), a server name. Kept apart from the
 * browser entry so the console's bundle never imports Node's modules.
 *
 * ```ts
 * import { EtterClient } from "@etter/pipeline-client";
 * import { nodeTransport } from "@etter/pipeline-client/node";
 * const tls = { ca: readFileSync("ca.pem"), cert: readFileSync("client.pem"), key: readFileSync("client.key") };
 * const client = new EtterClient("https://etter.internal:50051", jwt, nodeTransport(tls));
 * ```
 */
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import type { TransportFactory } from "./client.js";

/** TLS options of a Node.js connection (PEM text or bytes). */
export interface NodeTls {
  /** CAs the server's certificate may chain to, instead of Node's bundled roots. */
  ca?: string | Buffer;
  /** A client certificate chain, for a server that requires one. */
  cert?: string | Buffer;
  /** The client certificate's private key. */
  key?: string | Buffer;
  /** The name the server's certificate must carry, when it differs from the URL's host. */
  servername?: string;
}

/** A transport factory for {@link EtterClient}: gRPC over HTTP/2 with `tls`. */
export function nodeTransport(tls: NodeTls = {}): TransportFactory {
  return (baseUrl: string, interceptors: Interceptor[]): Transport =>
    createGrpcTransport({ baseUrl, interceptors, nodeOptions: { ...tls } });
}
