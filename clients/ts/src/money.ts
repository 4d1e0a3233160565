// leadpipe.v1.Money to and from decimal strings. Money is `units` (int64, a bigint here) plus
// `nanos` (10^-9 units) with the same sign, as google.type.Money. A JavaScript number cannot
// hold every int64 or every decimal fraction exactly, so amounts travel as strings.
import { create } from "@bufbuild/protobuf";
import { type Money, MoneySchema } from "./gen/leadpipe/v1/lead_pb.js";

const NANOS_PER_UNIT = 1_000_000_000n;
const INT64_MAX = (1n << 63n) - 1n;
const DECIMAL = /^(-)?(\d+)(?:\.(\d{1,9}))?$/;

/** A Money of `amount` (a decimal string such as "1999.99") in `currencyCode`. */
export function money(currencyCode: string, amount: string): Money {
  const match = DECIMAL.exec(amount.trim());
  if (match === null) {
    throw new RangeError(
      `${JSON.stringify(amount)} is not a decimal amount with at most nine decimal places`,
    );
  }
  const [, minus, whole, fraction = ""] = match;
  const units = BigInt(whole);
  if (units > INT64_MAX) {
    throw new RangeError(`${JSON.stringify(amount)} is beyond the int64 range of Money.units`);
  }
  const nanos = Number(fraction.padEnd(9, "0"));
  const sign = minus !== undefined && (units !== 0n || nanos !== 0) ? -1 : 1;
  return create(MoneySchema, {
    currencyCode,
    units: units * BigInt(sign),
    nanos: nanos * sign,
  });
}

/** The exact amount of a Money as a decimal string, for example "24000.5" (no currency). */
export function moneyToDecimal(value: Money): string {
  const total = value.units * NANOS_PER_UNIT + BigInt(value.nanos);
  const magnitude = total < 0n ? -total : total;
  const whole = magnitude / NANOS_PER_UNIT;
  const fraction = (magnitude % NANOS_PER_UNIT).toString().padStart(9, "0").replace(/0+$/, "");
  return `${total < 0n ? "-" : ""}${whole}${fraction ? `.${fraction}` : ""}`;
}
