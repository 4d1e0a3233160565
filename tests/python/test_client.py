"""A Python client, with stubs generated from proto/, against a real `leadpipe serve`.

It walks one lead through the pipeline the way an integration in another language would: create,
list and update it, read a refused move's google.rpc.PreconditionFailure with grpcio-status,
meet the criteria and move it, follow the move on the stage-change stream, and ask for metrics
and a forecast.
"""

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def leads(channel, pb):
    return pb.lead_service_pb2_grpc.LeadServiceStub(channel)


@pytest.fixture(scope="module")
def forecasts(channel, pb):
    return pb.forecast_pb2_grpc.ForecastServiceStub(channel)


def error_details(error: grpc.RpcError, detail_type):
    """The details of `detail_type` that the error's google.rpc.Status carries."""
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} carries no google.rpc.Status"
    found = []
    for detail in status.details:
        if detail.Is(detail_type.DESCRIPTOR):
            message = detail_type()
            detail.Unpack(message)
            found.append(message)
    return found


def refused_move(leads, pb, lead_id, stage):
    """Moves `lead_id` to `stage`, expects FAILED_PRECONDITION and returns the unmet subjects."""
    with pytest.raises(grpc.RpcError) as refused:
        leads.MoveLead(pb.lead_service_pb2.MoveLeadRequest(id=lead_id, stage=stage), timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
    (failure,) = error_details(refused.value, error_details_pb2.PreconditionFailure)
    return [(v.type, v.subject) for v in failure.violations]


def test_invalid_lead_reports_each_bad_field(leads, pb):
    lead = pb.lead_pb2.Lead(title="", amount=pb.lead_pb2.Money(currency_code="euro", units=5))
    with pytest.raises(grpc.RpcError) as error:
        leads.CreateLead(pb.lead_service_pb2.CreateLeadRequest(lead=lead), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad_request,) = error_details(error.value, error_details_pb2.BadRequest)
    fields = [violation.field for violation in bad_request.field_violations]
    assert fields == ["lead.title", "lead.amount.currency_code"]


def test_a_lead_from_first_contact_to_proposal(server, leads, forecasts, pb):
    lp = pb.lead_pb2
    ls = pb.lead_service_pb2
    owner = f"py-{server.backend}"
    request_id = str(uuid.uuid4())
    create = ls.CreateLeadRequest(
        lead=lp.Lead(
            title="Initech renewal",
            company="Initech",
            owner=owner,
            source="web",
            amount=lp.Money(currency_code="EUR", units=24000),
            labels={"region": "emea"},
        ),
        request_id=request_id,
    )
    lead = leads.CreateLead(create, timeout=10)
    assert lead.id and lead.etag
    assert lead.stage == "lead_generation"
    assert lead.pipeline_id == "default"
    assert leads.CreateLead(create, timeout=10).id == lead.id, "a retried request_id creates nothing"

    page = leads.ListLeads(
        ls.ListLeadsRequest(filter=f'owner = "{owner}" AND amount >= 20000', order_by="amount desc"),
        timeout=10,
    )
    assert page.total_size == 1
    assert [found.id for found in page.leads] == [lead.id]

    # Qualification needs a contact.
    assert refused_move(leads, pb, lead.id, "qualification") == [("STAGE_CRITERION", "contact_known")]

    updated = leads.UpdateLead(
        ls.UpdateLeadRequest(
            lead=lp.Lead(id=lead.id, contact_name="Peter Gibbons", etag=lead.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["contact_name"]),
        ),
        timeout=10,
    )
    assert updated.contact_name == "Peter Gibbons"
    assert updated.title == "Initech renewal", "fields outside the mask are kept"
    assert updated.etag != lead.etag

    # The etag read before the update is stale now.
    with pytest.raises(grpc.RpcError) as stale:
        leads.UpdateLead(
            ls.UpdateLeadRequest(
                lead=lp.Lead(id=lead.id, company="Initrode", etag=lead.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["company"]),
            ),
            timeout=10,
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED

    moved = leads.MoveLead(ls.MoveLeadRequest(id=lead.id, stage="qualification"), timeout=10)
    assert moved.stage == "qualification"

    # Proposal needs all four BANT criteria; the refusal lists every one.
    assert refused_move(leads, pb, lead.id, "proposal") == [
        ("STAGE_CRITERION", "bant_budget"),
        ("STAGE_CRITERION", "bant_authority"),
        ("STAGE_CRITERION", "bant_need"),
        ("STAGE_CRITERION", "bant_timeline"),
    ]
    timeline = timestamp_pb2.Timestamp()
    timeline.FromJsonString("2027-03-31T00:00:00Z")
    leads.UpdateLead(
        ls.UpdateLeadRequest(
            lead=lp.Lead(
                id=lead.id,
                bant=lp.Bant(
                    budget=lp.Money(currency_code="EUR", units=30000),
                    authority="Bill Lumbergh, VP",
                    need="TPS reports take a week",
                    timeline=timeline,
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["bant"]),
        ),
        timeout=10,
    )
    assert leads.CheckMove(ls.CheckMoveRequest(id=lead.id, stage="proposal"), timeout=10).allowed

    # Watch from the lead's last recorded change: the move below is delivered whether it commits
    # before or after the stream is set up, because the stream replays before it goes live.
    history = leads.ListStageChanges(ls.ListStageChangesRequest(lead_id=lead.id), timeout=10)
    assert [(c.from_stage, c.to_stage) for c in history.stage_changes] == [
        ("", "lead_generation"),
        ("lead_generation", "qualification"),
    ]
    last_sequence = history.stage_changes[-1].sequence
    events = leads.WatchStageChanges(
        ls.WatchStageChangesRequest(after_sequence=last_sequence, lead_id=lead.id), timeout=30
    )
    try:
        moved = leads.MoveLead(
            ls.MoveLeadRequest(id=lead.id, stage="proposal", note="BANT complete"), timeout=10
        )
        assert moved.stage == "proposal"
        event = next(events)
    finally:
        events.cancel()
    assert event.sequence > last_sequence
    assert (event.lead_id, event.from_stage, event.to_stage) == (lead.id, "qualification", "proposal")
    assert event.note == "BANT complete"
    assert event.lead.stage == "proposal"

    metrics = forecasts.GetPipelineMetrics(pb.forecast_pb2.GetPipelineMetricsRequest(), timeout=30)
    by_stage = {stage.stage: stage for stage in metrics.stages}
    assert by_stage["proposal"].open_count == 1
    assert [(m.currency_code, m.units) for m in by_stage["proposal"].open_amount] == [("EUR", 24000)]
    assert metrics.open_count == 1

    forecast = forecasts.GetForecast(
        pb.forecast_pb2.GetForecastRequest(
            currency_code="EUR", period=pb.forecast_pb2.PERIOD_MONTH, horizon_periods=3, seed=42
        ),
        timeout=30,
    )
    assert forecast.open_leads == 1
    assert len(forecast.periods) == 3

    def units(money):
        return money.units + money.nanos / 1e9

    for period in forecast.periods:
        assert units(period.p10_amount) <= units(period.p50_amount) <= units(period.p90_amount)
        assert units(period.p90_amount) <= 24000
