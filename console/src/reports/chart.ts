// The revenue chart's geometry, apart from React (tested alone): one bar per day, scaled to the largest.

export type Bar = { day: string; amount: number; x: number; y: number; width: number; height: number };

export function bars(days: { day: string; amount: number }[], width: number, height: number): Bar[] {
  if (days.length === 0) return [];
  const top = Math.max(1, ...days.map((d) => d.amount));
  const slot = width / days.length;
  return days.map((d, i) => {
    const h = Math.round((Math.max(0, d.amount) / top) * height);
    return { day: d.day, amount: d.amount, x: Math.round(i * slot + slot * 0.1), y: height - h, width: Math.max(1, Math.round(slot * 0.8)), height: h };
  });
}

/** A CSS colour for a utilisation share (0 … 1): white to the accent blue. */
export function heat(share: number): string {
  const s = Math.min(1, Math.max(0, share));
  const mix = (a: number, b: number) => Math.round(a + (b - a) * s);
  return `rgb(${mix(255, 11)}, ${mix(255, 92)}, ${mix(255, 173)})`;
}

/** Every day from `from` to `to` (ISO dates, at most a year), with the day's amount or 0. */
export function everyDay(from: string, to: string, days: { day: string; amount: number }[]): { day: string; amount: number }[] {
  const amounts = new Map(days.map((d) => [d.day, d.amount]));
  const out = [];
  const end = Date.parse(`${to}T00:00:00Z`);
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= end && out.length < 366; t += 86_400_000) {
    const day = new Date(t).toISOString().slice(0, 10);
    out.push({ day, amount: amounts.get(day) ?? 0 });
  }
  return out;
}
