// The TypeScript client against a real `leadpipe serve`, on SQLite and PostgreSQL, over gRPC and
// over gRPC-Web (the browser transport, here with Node's fetch): the flow of
// tests/python/test_client.py.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import {
  LeadpipeError,
  type LeadpipeClient,
  type StageChangeEvent,
  Period,
  createLeadpipeClient,
  money,
  moneyToDecimal,
  timestamp,
  timestampToDate,
  watchStageChanges,
} from "@leadpipe/client";
import { type Server, backends, startServer } from "./server.js";

async function refusal(call: Promise<unknown>): Promise<LeadpipeError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof LeadpipeError, `${error} is a LeadpipeError`);
    return error;
  }
  assert.fail("the call succeeded");
}

/** The next event of a watch, or a failure after 20 s. */
async function next(events: AsyncGenerator<StageChangeEvent>): Promise<StageChangeEvent> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error("no event within 20 s")), 20_000);
  });
  try {
    const result = await Promise.race([events.next(), timeout]);
    assert.ok(!result.done, "the watch ended");
    return result.value;
  } finally {
    clearTimeout(timer);
  }
}

for (const backend of backends()) {
  describe(`leadpipe client on ${backend}`, () => {
    let server: Server;
    let client: LeadpipeClient;
    before(async () => {
      server = await startServer(backend);
      client = createLeadpipeClient({ url: server.url });
    });
    after(async () => {
      await server?.stop();
    });

    test("create, list by win probability, refused moves, a resumed stream, a forecast", async () => {
      const owner = `node-${backend}`;
      const requestId = crypto.randomUUID();
      const create = {
        lead: {
          title: "Initech renewal",
          company: "Initech",
          owner,
          source: "web",
          amount: money("EUR", "24000.50"),
          expectedCloseTime: timestamp("2027-03-31T00:00:00Z"),
          labels: { region: "emea" },
        },
        requestId,
      };
      const lead = await client.leads.createLead(create);
      assert.ok(lead.id && lead.etag);
      assert.equal(lead.stage, "lead_generation");
      assert.equal(moneyToDecimal(lead.amount!), "24000.5");
      assert.equal(timestampToDate(lead.expectedCloseTime!).toISOString(), "2027-03-31T00:00:00.000Z");
      assert.equal((await client.leads.createLead(create)).id, lead.id, "a retried requestId creates nothing");
      for (const [title, source] of [["Globex pilot", "referral"], ["Umbrella upsell", "event"]]) {
        await client.leads.createLead({ lead: { title, owner, source, amount: money("EUR", "1000") } });
      }

      // order_by and filter name fields in snake_case, whatever the JSON or TS key.
      const page = await client.leads.listLeads({
        filter: `owner = "${owner}"`,
        orderBy: "win_probability desc",
      });
      assert.equal(page.totalSize, 3);
      const probabilities = page.leads.map((found) => found.winProbability);
      assert.deepEqual(probabilities, [...probabilities].sort((a, b) => b - a));
      assert.ok(page.leads.some((found) => found.id === lead.id));

      // A refused move carries each unmet criterion.
      const refused = await refusal(client.leads.moveLead({ id: lead.id, stage: "qualification" }));
      assert.equal(refused.code, Code.FailedPrecondition);
      assert.deepEqual(
        refused.preconditionViolations.map((v) => [v.type, v.subject]),
        [["STAGE_CRITERION", "contact_known"]],
      );

      // The epoch is what an unset Date often turns into; the server refuses it as a business date.
      const epoch = await refusal(
        client.leads.createLead({ lead: { title: "epoch", expectedCloseTime: timestamp(new Date(0)) } }),
      );
      assert.equal(epoch.code, Code.InvalidArgument);
      assert.deepEqual(epoch.fieldViolations.map((v) => v.field), ["lead.expected_close_time"]);

      await client.leads.updateLead({
        lead: { id: lead.id, contactName: "Peter Gibbons", etag: lead.etag },
        updateMask: { paths: ["contact_name"] },
      });
      const history = await client.leads.listStageChanges({ leadId: lead.id });
      const last = history.stageChanges.at(-1)!.sequence;
      assert.equal(typeof last, "bigint");

      // Resume: the watch reconnects after the server restarts, from the last sequence it gave.
      const abort = new AbortController();
      let live = 0;
      const events = watchStageChanges(client.leads, {
        afterSequence: last,
        leadId: lead.id,
        signal: abort.signal,
        reconnectAttempts: 12,
        onLive: () => {
          live += 1;
        },
      });
      const liveAgain = () => live;
      const pending = next(events);
      while (liveAgain() === 0) {
        await new Promise((ok) => setTimeout(ok, 10));
      }
      await client.leads.moveLead({ id: lead.id, stage: "qualification", note: "contact known" });
      const first = await pending;
      assert.ok(first.sequence > last);
      assert.deepEqual([first.fromStage, first.toStage, first.note], ["lead_generation", "qualification", "contact known"]);

      await server.restart();
      await client.leads.moveLead({ id: lead.id, stage: "lead_generation" });
      const second = await next(events);
      assert.ok(live >= 2, "the watch went live again after the restart");
      // Sequences count every lead write, so the next stage change is the next one recorded.
      const recorded = await client.leads.listStageChanges({ leadId: lead.id });
      assert.deepEqual(
        recorded.stageChanges.slice(-2).map((change) => change.sequence),
        [first.sequence, second.sequence],
        "nothing lost or repeated across the restart",
      );
      assert.deepEqual([second.fromStage, second.toStage], ["qualification", "lead_generation"]);
      abort.abort();
      assert.deepEqual(await events.next(), { done: true, value: undefined });

      const forecast = await client.forecasts.getForecast({
        currencyCode: "EUR",
        period: Period.MONTH,
        horizonPeriods: 3,
        seed: 42n,
      });
      assert.equal(forecast.openLeads, 3n);
      assert.equal(forecast.periods.length, 3);
      for (const period of forecast.periods) {
        const [p10, p50, p90] = [period.p10Amount!, period.p50Amount!, period.p90Amount!].map((m) =>
          Number(moneyToDecimal(m)),
        );
        assert.ok(p10 <= p50 && p50 <= p90 && p90 <= 26000.5, `${p10} ≤ ${p50} ≤ ${p90}`);
      }
    });

    test("the browser transport (gRPC-Web): calls, error details and a stream", async () => {
      const web = createLeadpipeClient({ url: server.url, protocol: "grpc-web" });
      const lead = await web.leads.createLead({ lead: { title: "Hooli web lead" } });
      assert.equal((await web.leads.getLead({ id: lead.id })).title, "Hooli web lead");
      const refused = await refusal(web.leads.moveLead({ id: lead.id, stage: "qualification" }));
      assert.deepEqual(refused.preconditionViolations.map((v) => v.subject), ["contact_known"]);
      const missing = await refusal(web.leads.getLead({ id: "not-a-uuid" }));
      assert.equal(missing.code, Code.InvalidArgument);
      assert.deepEqual(missing.fieldViolations.map((v) => v.field), ["id"]);

      const abort = new AbortController();
      let isLive = false;
      const events = watchStageChanges(web.leads, {
        leadId: lead.id,
        signal: abort.signal,
        onLive: () => {
          isLive = true;
        },
      });
      const pending = next(events);
      while (!isLive) {
        await new Promise((ok) => setTimeout(ok, 10));
      }
      await web.leads.updateLead({ lead: { id: lead.id, contactName: "Gavin" }, updateMask: { paths: ["contact_name"] } });
      await web.leads.moveLead({ id: lead.id, stage: "qualification" });
      assert.equal((await pending).toStage, "qualification");
      abort.abort();
    });
  });
}
