// Browsers cannot speak gRPC (it needs HTTP/2 trailers that fetch does not expose), so pages use
// gRPC-Web, which leadpipe serves on the same port. Bundlers pick this file through the
// "browser" condition of package.json's "#platform" import, which keeps Node's http2 out of
// browser bundles.
import type { Interceptor, Transport } from "@connectrpc/connect";

export const defaultProtocol = "grpc-web";

export function createGrpcTransport(_baseUrl: string, _interceptors: Interceptor[]): Transport {
  throw new Error(
    'the "grpc" protocol needs Node; browsers use "grpc-web", which leadpipe serves on the same port',
  );
}
