/**
 * RFC 3339 date-times, read one way everywhere: Mission Status answers, lifecycle events and
 * `time_window` / `resource_issued_*` constraints. RFC 3339 section 5.6 allows `t` and `z` in lower
 * case, and a leap second (`:60`); Date.parse takes neither reliably, and rolls impossible dates
 * (February 30th) over into the next month.
 */
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|([+-])(\d{2}):(\d{2}))$/;

/** RFC 3339 date-time to epoch milliseconds, or null. A leap second counts as the second before it. */
export function parseRfc3339(v: unknown): number | null {
  // Any number of fraction digits (RFC 3339 sets no limit); only milliseconds are kept.
  if (typeof v !== 'string' || v.length > 64) return null;
  const m = RFC3339.exec(v);
  if (m === null) return null;
  const [y, mo, d, h, mi, s] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number, number];
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 60) return null;
  const day = new Date(Date.UTC(y, mo - 1, d));
  if (day.getUTCMonth() !== mo - 1) return null;
  let offset = 0;
  if (m[9] !== undefined) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) return null;
    offset = (m[9] === '-' ? -1 : 1) * (oh * 60 + om) * 60_000;
  }
  const frac = m[7] === undefined ? 0 : Number(m[7].slice(1, 4).padEnd(3, '0')); // .029 is 29 ms, not 0.029 * 1000 = 28.99…
  return Date.UTC(y, mo - 1, d, h, mi, Math.min(s, 59), frac) - offset;
}
