// The transports of a Node process: gRPC over HTTP/2 by default, gRPC-Web on request.
import { createGrpcTransport as createNodeGrpcTransport } from "@connectrpc/connect-node";
import type { Interceptor, Transport } from "@connectrpc/connect";

export const defaultProtocol = "grpc";

export function createGrpcTransport(baseUrl: string, interceptors: Interceptor[]): Transport {
  return createNodeGrpcTransport({ baseUrl, interceptors });
}
