// leadpipe's TypeScript client: the generated messages and services (./gen, protobuf-es v2 and
// Connect), createLeadpipeClient over gRPC (Node) or gRPC-Web (browsers), and helpers for Money,
// timestamps, error details and resumable stage-change watches.
export { createLeadpipeClient } from "./client.js";
export type { LeadpipeClient, LeadpipeClientOptions, Protocol } from "./client.js";
export { LeadpipeError } from "./errors.js";
export type { FieldViolation, PreconditionViolation } from "./errors.js";
export { money, moneyToDecimal } from "./money.js";
export { timestamp, timestampToDate } from "./time.js";
export { watchStageChanges } from "./watch.js";
export type { WatchOptions } from "./watch.js";
export * from "./gen/leadpipe/v1/lead_pb.js";
export * from "./gen/leadpipe/v1/lead_service_pb.js";
export * from "./gen/leadpipe/v1/pipeline_pb.js";
export * from "./gen/leadpipe/v1/forecast_pb.js";
