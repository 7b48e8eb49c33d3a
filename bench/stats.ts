/** Small statistics for the benchmarks. */

/** The median (of an even count, the mean of the middle two): the machine is noisy, the median less so. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}
