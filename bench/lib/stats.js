/** Small numeric helpers: Prometheus histogram scraping and percentiles. */

/**
 * Parses `<name>_bucket{...,le="x"} n` lines of one histogram from a Prometheus text exposition,
 * summing over all other labels. Returns [{ le, count }] sorted by le (cumulative counts).
 */
export function histogramBuckets(text, name) {
  const byLe = new Map();
  const prefix = `${name}_bucket{`;
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const m = /le="([^"]+)"[^}]*\}\s+(\S+)/.exec(line);
    if (m === null) continue;
    const le = m[1] === '+Inf' ? Infinity : Number(m[1]);
    byLe.set(le, (byLe.get(le) ?? 0) + Number(m[2]));
  }
  return [...byLe.entries()].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
}

/** after - before, bucket by bucket. */
export function diffBuckets(after, before) {
  const prev = new Map(before.map((b) => [b.le, b.count]));
  return after.map((b) => ({ le: b.le, count: b.count - (prev.get(b.le) ?? 0) }));
}

/**
 * The q-quantile (0..1) of cumulative buckets, interpolated linearly inside the bucket as
 * Prometheus' histogram_quantile does. Null when empty.
 */
export function bucketQuantile(buckets, q) {
  const total = buckets.at(-1)?.count ?? 0;
  if (total === 0) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const { le, count } of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      const inBucket = count - prevCount;
      return inBucket === 0 ? le : prevLe + (le - prevLe) * ((rank - prevCount) / inBucket);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/** The median of the non-null values (the mean of the middle two for an even count), or null for none. */
export function median(xs) {
  const v = xs.filter((x) => x !== null && x !== undefined).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}
