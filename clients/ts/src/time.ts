// google.protobuf.Timestamp to and from Date. A Date whose time is NaN (new Date("garbage"))
// would otherwise become a Timestamp of NaN seconds; it is refused here.
import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";

/** The Timestamp of a Date, or of an RFC 3339 string such as "2027-03-31T00:00:00Z". */
export function timestamp(value: Date | string): Timestamp {
  const date = typeof value === "string" ? new Date(value) : value;
  if (Number.isNaN(date.getTime())) {
    throw new RangeError(`${JSON.stringify(String(value))} is not a valid date`);
  }
  return timestampFromDate(date);
}

/** The instant of a Timestamp, as a Date (millisecond precision). */
export function timestampToDate(value: Timestamp): Date {
  return timestampDate(value);
}
