import { type Client, Code } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { LeadpipeError } from "./errors.js";
import {
  type LeadService,
  type StageChangeEvent,
  type WatchStageChangesRequest,
  WatchStageChangesRequestSchema,
} from "./gen/leadpipe/v1/lead_service_pb.js";

export interface WatchOptions {
  /**
   * Replay every event after this sequence first; 0n replays all that is retained. Left out, the
   * stream starts with events committed after it is live. A bigint: sequences are int64.
   */
  afterSequence?: bigint;
  /** Filters, as in WatchStageChangesRequest (empty matches everything). */
  leadId?: string;
  pipelineId?: string;
  stages?: string[];
  owner?: string;
  /**
   * Called each time the stream is live: the server sends response headers only once the
   * subscription is registered, so a change committed after this call is delivered.
   */
  onLive?: () => void;
  /** Ends the watch. */
  signal?: AbortSignal;
  /** Reconnections in a row after UNAVAILABLE before the error is thrown; 5 by default. */
  reconnectAttempts?: number;
}

/**
 * A watch of stage changes that resumes after the last sequence it delivered: when the stream
 * fails with UNAVAILABLE (a restart, a lost connection), it is opened again with
 * `afterSequence` set to that sequence, so nothing is lost or repeated. Before its first event, a
 * watch without `afterSequence` can only reconnect for new events; give one (0n replays what is
 * retained) to rule out a gap. Other errors are thrown as LeadpipeError, for example OUT_OF_RANGE
 * when the sequence is older than the retention window.
 */
export async function* watchStageChanges(
  leads: Client<typeof LeadService>,
  options: WatchOptions = {},
): AsyncGenerator<StageChangeEvent, void, undefined> {
  let last = options.afterSequence;
  let failures = 0;
  const attempts = options.reconnectAttempts ?? 5;
  for (;;) {
    const request: WatchStageChangesRequest = create(WatchStageChangesRequestSchema, {
      afterSequence: last,
      leadId: options.leadId,
      pipelineId: options.pipelineId,
      stages: options.stages,
      owner: options.owner,
    });
    try {
      const stream = leads.watchStageChanges(request, {
        signal: options.signal,
        onHeader: () => options.onLive?.(),
      });
      for await (const event of stream) {
        failures = 0;
        last = event.sequence;
        yield event;
      }
      return;
    } catch (reason) {
      const error = LeadpipeError.fromError(reason);
      if (options.signal?.aborted || error.code === Code.Canceled) {
        return;
      }
      if (error.code !== Code.Unavailable || failures >= attempts) {
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(100 * 2 ** failures, 5000)));
      failures += 1;
    }
  }
}
