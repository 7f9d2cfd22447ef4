/** The console's accent colour from a tenant's brand colour, kept readable: white text on it (buttons) and it as
 * link text on the page's light grey must both reach the WCAG AA contrast of 4.5:1, which holds when white on it
 * reaches 5:1 — so a light brand colour is darkened until it does. */

const AA = 5;

function channels(hex: string): [number, number, number] | null {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)] : null;
}

function luminance([r, g, b]: [number, number, number]): number {
  const lin = (c: number) => {
    const s = c / 255;
    return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

/** Contrast of white against `hex` (1 to 21). */
export function contrastWithWhite(hex: string): number {
  const c = channels(hex);
  return c ? 1.05 / (luminance(c) + 0.05) : 1;
}

const toHex = (c: [number, number, number]) => `#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`;

/** The accent to use for `brand` (`#rrggbb`), or null to keep the console's own. */
export function accentFor(brand: string | null | undefined): string | null {
  let c = brand ? channels(brand) : null;
  if (!c) return null;
  for (let i = 0; i < 40 && contrastWithWhite(toHex(c)) < AA; i++) {
    c = c.map((v) => Math.floor(v * 0.9)) as [number, number, number];
  }
  return toHex(c);
}
