import { accentFor } from './accent';

export type Branding = { logoUrl?: string | null; color?: string | null };

const DEFAULT_ACCENT = '#0b5cad';

/** Applies a tenant's branding to the page (the accent colour, kept readable) and returns the logo to show. */
export function applyBranding(branding: Branding | null): string | null {
  const accent = accentFor(branding?.color) ?? DEFAULT_ACCENT;
  document.documentElement.style.setProperty('--accent', accent);
  return branding?.logoUrl ?? null;
}
