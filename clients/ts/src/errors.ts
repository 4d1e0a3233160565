// leadpipe's errors with their google.rpc details decoded. The server puts a google.rpc.Status
// in `grpc-status-details-bin`; Connect decodes the Status, and the schemas generated from the
// vendored proto/google/rpc/error_details.proto decode its details.
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  type ErrorInfo,
  ErrorInfoSchema,
  PreconditionFailureSchema,
} from "./gen/google/rpc/error_details_pb.js";

/** A bad request field: its path in snake_case, for example "lead.expected_close_time". */
export interface FieldViolation {
  field: string;
  description: string;
}

/** An unmet precondition, for example a stage criterion: type "STAGE_CRITERION", subject "bant_budget". */
export interface PreconditionViolation {
  type: string;
  subject: string;
  description: string;
}

/**
 * A failed call, as a ConnectError (so `code`, `rawMessage` and `metadata` are there) with its
 * details decoded: INVALID_ARGUMENT carries `fieldViolations`, a refused move
 * (FAILED_PRECONDITION) `preconditionViolations`, and OUT_OF_RANGE on a stream an `errorInfo`
 * whose metadata names "oldest_available_sequence".
 */
export class LeadpipeError extends ConnectError {
  readonly fieldViolations: FieldViolation[];
  readonly preconditionViolations: PreconditionViolation[];
  readonly errorInfo: ErrorInfo | undefined;

  constructor(error: ConnectError) {
    super(error.rawMessage, error.code, error.metadata, undefined, error.cause);
    this.details = error.details;
    this.fieldViolations = this.findDetails(BadRequestSchema).flatMap((d) =>
      d.fieldViolations.map(({ field, description }) => ({ field, description })),
    );
    this.preconditionViolations = this.findDetails(PreconditionFailureSchema).flatMap((d) =>
      d.violations.map(({ type, subject, description }) => ({ type, subject, description })),
    );
    this.errorInfo = this.findDetails(ErrorInfoSchema)[0];
  }

  /**
   * ConnectError's own `instanceof` accepts any object shaped like a ConnectError (its `name`
   * included, which is why this class keeps "ConnectError"), so that errors from another copy of
   * the library pass, and Connect passes such errors on unchanged. A LeadpipeError is told apart
   * by its prototype chain.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }

  /** `reason` as a LeadpipeError; anything that is not a ConnectError becomes UNKNOWN. */
  static fromError(reason: unknown): LeadpipeError {
    return reason instanceof LeadpipeError
      ? reason
      : new LeadpipeError(ConnectError.from(reason, Code.Unknown));
  }
}
