// The calendar check Go's time parsing applies to a timestamp's date and time fields, shared by every
// timestamp format the protocol reads (server entries, API parameters, authorizations).

/** Days in a month; setUTCFullYear, unlike Date.UTC, does not map years 0..99 to 1900..1999. */
export function daysInMonth(year: number, month: number): number {
  const d = new Date(0);
  d.setUTCFullYear(year, month, 0); // day 0 of the next month = last day of this one
  return d.getUTCDate();
}

/**
 * Whether groups 1..6 of a timestamp match (year, month, day, hour, minute, second) name a real date and a
 * time of day, as Go checks them (no leap seconds).
 */
export function isValidDateTimeMatch(m: RegExpExecArray): boolean {
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return false;
  return hour <= 23 && minute <= 59 && second <= 59;
}
