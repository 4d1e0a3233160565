"""The Python client package (clients/python) against a real `leadpipe serve`.

It walks leads through the pipeline the way an integration would: create them (Money as
Decimal, timestamps as datetime), list them by learned win probability, update one with an etag,
read refused moves' violations from the exceptions, follow the moves on a stage-change watch that
resumes across a server restart, and ask for metrics and a forecast.
"""

import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from google.protobuf import field_mask_pb2

import leadpipe
from leadpipe.v1 import forecast_pb2, lead_pb2, lead_service_pb2 as ls


@pytest.fixture(scope="module")
def client(server):
    with leadpipe.connect(server.address) as client:
        yield client


def refused_move(client, lead_id, stage):
    """Moves `lead_id` to `stage`, expects FailedPrecondition and returns the unmet subjects."""
    with pytest.raises(leadpipe.FailedPrecondition) as refused:
        client.leads.MoveLead(ls.MoveLeadRequest(id=lead_id, stage=stage), timeout=10)
    return [(v.type, v.subject) for v in refused.value.precondition_violations]


def test_helpers_round_trip_money_and_times():
    for amount in ["0", "24000.5", "0.000000001", "-12.34", "9223372036854775807.999999999"]:
        assert leadpipe.to_decimal(leadpipe.money("EUR", amount)) == Decimal(amount)
    with pytest.raises(TypeError):
        leadpipe.money("EUR", 0.1)
    with pytest.raises(ValueError):
        leadpipe.money("EUR", "1.0000000001")
    local = datetime.fromisoformat("2027-03-31T02:00:00+02:00")
    assert leadpipe.to_datetime(leadpipe.timestamp(local)) == datetime(2027, 3, 31, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        leadpipe.timestamp(datetime(2027, 3, 31))


def test_invalid_lead_reports_each_bad_field(client):
    lead = lead_pb2.Lead(
        title="",
        amount=lead_pb2.Money(currency_code="euro", units=5),
        expected_close_time=leadpipe.timestamp(datetime(1970, 1, 1, tzinfo=timezone.utc)),
    )
    with pytest.raises(leadpipe.InvalidArgument) as error:
        client.leads.CreateLead(ls.CreateLeadRequest(lead=lead), timeout=10)
    assert [v.field for v in error.value.field_violations] == [
        "lead.title",
        "lead.amount.currency_code",
        "lead.expected_close_time",
    ]


def test_a_lead_from_first_contact_to_proposal(server, client):
    owner = f"py-{server.backend}"
    create = ls.CreateLeadRequest(
        lead=lead_pb2.Lead(
            title="Initech renewal",
            company="Initech",
            owner=owner,
            source="web",
            amount=leadpipe.money("EUR", Decimal("24000.50")),
            expected_close_time=leadpipe.timestamp(datetime(2027, 6, 30, tzinfo=timezone.utc)),
            labels={"region": "emea"},
        ),
        request_id=str(uuid.uuid4()),
    )
    lead = client.leads.CreateLead(create, timeout=10)
    assert lead.id and lead.etag
    assert lead.stage == "lead_generation"
    assert leadpipe.to_decimal(lead.amount) == Decimal("24000.5")
    assert leadpipe.to_datetime(lead.expected_close_time) == datetime(2027, 6, 30, tzinfo=timezone.utc)
    assert client.leads.CreateLead(create, timeout=10).id == lead.id, "a retried request_id creates nothing"
    for title, source in [("Globex pilot", "referral"), ("Umbrella upsell", "event")]:
        client.leads.CreateLead(
            ls.CreateLeadRequest(
                lead=lead_pb2.Lead(title=title, owner=owner, source=source,
                                   amount=leadpipe.money("EUR", 1000))
            ),
            timeout=10,
        )

    page = client.leads.ListLeads(
        ls.ListLeadsRequest(filter=f'owner = "{owner}"', order_by="win_probability desc"), timeout=10
    )
    assert page.total_size == 3
    probabilities = [found.win_probability for found in page.leads]
    assert probabilities == sorted(probabilities, reverse=True)
    assert lead.id in [found.id for found in page.leads]

    # Qualification needs a contact.
    assert refused_move(client, lead.id, "qualification") == [("STAGE_CRITERION", "contact_known")]

    updated = client.leads.UpdateLead(
        ls.UpdateLeadRequest(
            lead=lead_pb2.Lead(id=lead.id, contact_name="Peter Gibbons", etag=lead.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["contact_name"]),
        ),
        timeout=10,
    )
    assert updated.title == "Initech renewal", "fields outside the mask are kept"
    with pytest.raises(leadpipe.Aborted):
        client.leads.UpdateLead(
            ls.UpdateLeadRequest(
                lead=lead_pb2.Lead(id=lead.id, company="Initrode", etag=lead.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["company"]),
            ),
            timeout=10,
        )

    history = client.leads.ListStageChanges(ls.ListStageChangesRequest(lead_id=lead.id), timeout=10)
    last_sequence = history.stage_changes[-1].sequence
    with client.watch_stage_changes(
        after_sequence=last_sequence, lead_id=lead.id, reconnect_attempts=12
    ) as watch:
        watch.wait_live()
        client.leads.MoveLead(
            ls.MoveLeadRequest(id=lead.id, stage="qualification", note="contact known"), timeout=10
        )
        first = next(watch)
        assert first.sequence > last_sequence
        assert (first.from_stage, first.to_stage, first.note) == (
            "lead_generation", "qualification", "contact known",
        )

        # Proposal needs all four BANT criteria; the refusal lists every one.
        assert refused_move(client, lead.id, "proposal") == [
            ("STAGE_CRITERION", "bant_budget"),
            ("STAGE_CRITERION", "bant_authority"),
            ("STAGE_CRITERION", "bant_need"),
            ("STAGE_CRITERION", "bant_timeline"),
        ]
        client.leads.UpdateLead(
            ls.UpdateLeadRequest(
                lead=lead_pb2.Lead(
                    id=lead.id,
                    bant=lead_pb2.Bant(
                        budget=leadpipe.money("EUR", 30000),
                        authority="Bill Lumbergh, VP",
                        need="TPS reports take a week",
                        timeline=leadpipe.timestamp(datetime(2027, 3, 31, tzinfo=timezone.utc)),
                    ),
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["bant"]),
            ),
            timeout=10,
        )

        # The watch reconnects after the restart from the last sequence it delivered.
        server.restart()
        # wait_for_ready: the channel may still be backing off from the refused reconnects.
        moved = client.leads.MoveLead(
            ls.MoveLeadRequest(id=lead.id, stage="proposal", note="BANT complete"),
            timeout=10,
            wait_for_ready=True,
        )
        assert moved.stage == "proposal"
        second = next(watch)
        # Sequences count every lead write (the BANT update took one), so the next stage change
        # is the next one recorded, not the next number.
        recorded = client.leads.ListStageChanges(ls.ListStageChangesRequest(lead_id=lead.id), timeout=10)
        assert [c.sequence for c in recorded.stage_changes[-2:]] == [first.sequence, second.sequence], (
            "nothing lost or repeated across the restart"
        )
        assert (second.from_stage, second.to_stage) == ("qualification", "proposal")
        assert second.lead.stage == "proposal"
        assert watch.last_sequence == second.sequence

    metrics = client.forecasts.GetPipelineMetrics(forecast_pb2.GetPipelineMetricsRequest(), timeout=30)
    by_stage = {stage.stage: stage for stage in metrics.stages}
    assert by_stage["proposal"].open_count == 1
    assert [(m.currency_code, leadpipe.to_decimal(m)) for m in by_stage["proposal"].open_amount] == [
        ("EUR", Decimal("24000.5"))
    ]

    forecast = client.forecasts.GetForecast(
        forecast_pb2.GetForecastRequest(
            currency_code="EUR", period=forecast_pb2.PERIOD_MONTH, horizon_periods=3, seed=42
        ),
        timeout=30,
    )
    assert forecast.open_leads == 3
    assert len(forecast.periods) == 3
    for period in forecast.periods:
        p10, p50, p90 = (leadpipe.to_decimal(m) for m in (period.p10_amount, period.p50_amount, period.p90_amount))
        assert p10 <= p50 <= p90 <= Decimal("26000.5")
