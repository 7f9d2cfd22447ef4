import { accentFor } from './accent';

export type Branding = { logoUrl?: string | null; color?: string | null };

const DEFAULT_ACCENT = '#0b5cad';
const listeners = new Set<(logo: string | null) => void>();

/** Applies a tenant's branding to the page (the accent colour, kept readable) and tells the header its logo. */
export function applyBranding(branding: Branding | null): void {
  const accent = accentFor(branding?.color) ?? DEFAULT_ACCENT;
  document.documentElement.style.setProperty('--accent', accent);
  const logo = branding?.logoUrl ?? null;
  listeners.forEach((l) => l(logo));
}

/** Calls `listener` with the logo whenever branding is applied; returns the unsubscribe. */
export function onLogo(listener: (logo: string | null) => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}
