// The helpers that need no server: Money and timestamps.
import assert from "node:assert/strict";
import { test } from "node:test";
import { money, moneyToDecimal, timestamp, timestampToDate } from "@leadpipe/client";

test("money round-trips decimal strings exactly, int64 included", () => {
  for (const amount of ["0", "24000.5", "0.000000001", "-12.34", "9223372036854775807.999999999"]) {
    assert.equal(moneyToDecimal(money("EUR", amount)), amount);
  }
  const m = money("EUR", "-12.34");
  assert.deepEqual([m.units, m.nanos], [-12n, -340_000_000]);
  assert.throws(() => money("EUR", "1.0000000001"), RangeError);
  assert.throws(() => money("EUR", "9223372036854775808"), RangeError);
  assert.throws(() => money("EUR", "1e3"), RangeError);
});

test("timestamps come from valid Dates and RFC 3339 strings only", () => {
  const ts = timestamp("2027-03-31T12:00:00.250Z");
  assert.deepEqual([ts.seconds, ts.nanos], [1_806_494_400n, 250_000_000]);
  assert.equal(timestampToDate(ts).toISOString(), "2027-03-31T12:00:00.250Z");
  assert.throws(() => timestamp("31/03/2027"), RangeError);
  assert.throws(() => timestamp(new Date(Number.NaN)), RangeError);
});
