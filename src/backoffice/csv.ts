// CSV exports of report rows (RFC 4180): a header line, CRLF line ends, fields quoted when they hold a comma, a
// quote or a line break, quotes doubled. Columns are fixed by the caller, so only declared fields leave.

export function csvField(value: unknown): string {
  const s = value === null || value === undefined ? '' : String(value);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function toCsv(columns: readonly string[], rows: readonly object[]): string {
  const lines = [columns.map(csvField).join(',')];
  for (const row of rows) {
    const r = row as Record<string, unknown>;
    lines.push(columns.map((c) => csvField(r[c])).join(','));
  }
  return lines.join('\r\n') + '\r\n';
}
