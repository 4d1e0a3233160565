import { type Client, type Interceptor, type Transport, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { createGrpcTransport, defaultProtocol } from "#platform";
import { LeadpipeError } from "./errors.js";
import { ForecastService } from "./gen/leadpipe/v1/forecast_pb.js";
import { LeadService } from "./gen/leadpipe/v1/lead_service_pb.js";
import { PipelineService } from "./gen/leadpipe/v1/pipeline_pb.js";

/**
 * How to reach leadpipe. It speaks gRPC and gRPC-Web on one port, and not the Connect
 * protocol: `createConnectTransport` fails with "unsupported content type application/grpc".
 */
export type Protocol = "grpc" | "grpc-web";

export interface LeadpipeClientOptions {
  /** The server's base URL, for example "http://localhost:50051" or "https://leadpipe.example". */
  url: string;
  /** Sent as `authorization: Bearer <key>` on every call. */
  apiKey?: string;
  /** "grpc" (the default in Node) or "grpc-web" (the default, and the only choice, in browsers). */
  protocol?: Protocol;
  /** Further interceptors, run after the API key is set and before errors are decoded. */
  interceptors?: Interceptor[];
}

export interface LeadpipeClient {
  leads: Client<typeof LeadService>;
  pipelines: Client<typeof PipelineService>;
  forecasts: Client<typeof ForecastService>;
  /** The transport the three clients share, for createClient with other options. */
  transport: Transport;
}

/** Errors of every call, unary or streaming, arrive as LeadpipeError with details decoded. */
const decodeErrors: Interceptor = (next) => async (request) => {
  try {
    const response = await next(request);
    if (!response.stream) {
      return response;
    }
    const messages = response.message;
    return {
      ...response,
      message: (async function* () {
        try {
          yield* messages;
        } catch (error) {
          throw LeadpipeError.fromError(error);
        }
      })(),
    };
  } catch (error) {
    throw LeadpipeError.fromError(error);
  }
};

/** Clients of leadpipe's three services over one transport. */
export function createLeadpipeClient(options: LeadpipeClientOptions): LeadpipeClient {
  const authorization: Interceptor[] = options.apiKey
    ? [
        (next) => (request) => {
          request.header.set("authorization", `Bearer ${options.apiKey}`);
          return next(request);
        },
      ]
    : [];
  // Connect runs the first interceptor outermost: errors are decoded last, after the others.
  const interceptors = [decodeErrors, ...authorization, ...(options.interceptors ?? [])];
  const protocol = options.protocol ?? defaultProtocol;
  const transport =
    protocol === "grpc"
      ? createGrpcTransport(options.url, interceptors)
      : createGrpcWebTransport({ baseUrl: options.url, interceptors });
  return {
    leads: createClient(LeadService, transport),
    pipelines: createClient(PipelineService, transport),
    forecasts: createClient(ForecastService, transport),
    transport,
  };
}
