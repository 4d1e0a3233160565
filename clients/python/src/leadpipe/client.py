"""A channel to leadpipe with its three service stubs, API-key authentication, errors decoded
into `LeadpipeError`, and a resumable stage-change watch."""

import threading
import time
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import grpc

from leadpipe.errors import LeadpipeError
from leadpipe.v1 import (
    forecast_pb2_grpc,
    lead_service_pb2,
    lead_service_pb2_grpc,
    pipeline_pb2_grpc,
)


class _CallDetails(NamedTuple):
    method: str
    timeout: "float | None"
    metadata: "tuple | None"
    credentials: "grpc.CallCredentials | None"
    wait_for_ready: "bool | None"
    compression: "grpc.Compression | None"


class _Interceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
):
    """Adds `authorization: Bearer <key>` to every call, and turns a failed unary call's
    RpcError into a LeadpipeError. Streams raise theirs while they are read (see StageChangeWatch).
    """

    def __init__(self, api_key: "str | None"):
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    def _details(self, details):
        return _CallDetails(
            details.method,
            details.timeout,
            tuple(details.metadata or ()) + self._metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    @staticmethod
    def _decoded(outcome):
        error = outcome.exception()
        if error is not None:
            raise LeadpipeError.from_rpc_error(error) from None
        return outcome

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return self._decoded(continuation(self._details(client_call_details), request))

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return self._decoded(continuation(self._details(client_call_details), request_iterator))

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)


class Client:
    """leadpipe's services over one channel. Use as a context manager, or call close()."""

    def __init__(self, channel: grpc.Channel, api_key: "str | None" = None):
        self._raw_channel = channel
        self.channel = grpc.intercept_channel(channel, _Interceptor(api_key))
        self.leads = lead_service_pb2_grpc.LeadServiceStub(self.channel)
        self.pipelines = pipeline_pb2_grpc.PipelineServiceStub(self.channel)
        self.forecasts = forecast_pb2_grpc.ForecastServiceStub(self.channel)

    def watch_stage_changes(
        self,
        *,
        after_sequence: "int | None" = None,
        lead_id: str = "",
        pipeline_id: str = "",
        stages: Iterable[str] = (),
        owner: str = "",
        reconnect_attempts: int = 5,
    ) -> "StageChangeWatch":
        """A stage-change stream that reconnects after UNAVAILABLE, resuming after the last
        sequence it delivered. See StageChangeWatch."""
        request = lead_service_pb2.WatchStageChangesRequest(
            pipeline_id=pipeline_id, stages=list(stages), owner=owner, lead_id=lead_id
        )
        if after_sequence is not None:
            request.after_sequence = after_sequence
        return StageChangeWatch(self.leads, request, reconnect_attempts)

    def close(self) -> None:
        self._raw_channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def connect(
    target: str,
    *,
    api_key: "str | None" = None,
    root_certificates: "bytes | None" = None,
    tls: bool = False,
) -> Client:
    """A client of the leadpipe server at `target` ("host:port").

    Plaintext unless `tls` is set or `root_certificates` (PEM) are given. With an `api_key`,
    every call sends it as `authorization: Bearer <key>`.
    """
    if tls or root_certificates is not None:
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates))
    else:
        channel = grpc.insecure_channel(target)
    return Client(channel, api_key)


class StageChangeWatch(Iterator):
    """Iterates a WatchStageChanges stream; `last_sequence` is the sequence of the last event
    delivered (a Python int: int64 needs no special care here).

    When the connection fails with UNAVAILABLE (a restart, a lost connection), the watch opens the
    stream again with `after_sequence` set to `last_sequence`, so nothing is lost or repeated, up
    to `reconnect_attempts` times in a row with growing pauses. Before its first event, a watch
    opened without `after_sequence` can only reconnect for new events, so events committed while
    it was disconnected are missed: give an `after_sequence` (0 replays all that is retained) to
    rule that out. Any other error is raised as a LeadpipeError, for example OutOfRange when the
    sequence is older than the retention window (its `error_info.metadata` names
    "oldest_available_sequence").

    `wait_live()` returns once the server has sent the stream's response headers, which it does
    only after the subscription is registered: a change committed afterwards is delivered.
    """

    def __init__(self, stub, request, reconnect_attempts: int):
        self._stub = stub
        self._request = request
        self._reconnect_attempts = reconnect_attempts
        self._lock = threading.Lock()
        self._closed = False
        self.last_sequence: "int | None" = (
            request.after_sequence if request.HasField("after_sequence") else None
        )
        self._call = self._open()

    def _open(self):
        request = lead_service_pb2.WatchStageChangesRequest()
        request.CopyFrom(self._request)
        if self.last_sequence is not None:
            request.after_sequence = self.last_sequence
        return self._stub.WatchStageChanges(request)

    def wait_live(self) -> None:
        """Blocks until the stream is live (its response headers arrived) or has failed."""
        self._call.initial_metadata()
        if self._call.done() and self._call.code() != grpc.StatusCode.OK:
            raise LeadpipeError.from_rpc_error(self._call)

    def __next__(self):
        failures = 0
        while True:
            try:
                event = next(self._call)
            except grpc.RpcError as error:
                with self._lock:
                    if self._closed:
                        raise StopIteration from None
                if error.code() != grpc.StatusCode.UNAVAILABLE or failures >= self._reconnect_attempts:
                    raise LeadpipeError.from_rpc_error(error) from None
                time.sleep(min(0.1 * 2**failures, 5.0))
                failures += 1
                self._call = self._open()
                continue
            self.last_sequence = event.sequence
            return event

    def close(self) -> None:
        """Ends the stream; a pending or later next() stops the iteration."""
        with self._lock:
            self._closed = True
        self._call.cancel()

    def __enter__(self) -> "StageChangeWatch":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
