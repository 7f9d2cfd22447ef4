import { useEffect, useState } from 'react';

export type Page = 'login' | 'signup' | 'forgot' | 'floor' | 'sessions' | 'patrons' | 'staff' | 'reports' | 'chargers' | 'settings' | 'setup' | 'work' | 'rentals' | 'verify-email' | 'reset-password' | 'invitations';
const PAGES: Page[] = ['login', 'signup', 'forgot', 'floor', 'sessions', 'patrons', 'staff', 'reports', 'chargers', 'settings', 'setup', 'work', 'rentals', 'verify-email', 'reset-password', 'invitations'];
const BASE = '/console/';

/** The page a console path names (`/console/floor` → floor); unknown paths go to the floor. */
export function pageOf(path: string): Page {
  const name = path.startsWith(BASE) ? path.slice(BASE.length).split('/')[0] : '';
  return (PAGES as string[]).includes(name) ? (name as Page) : 'floor';
}


/** The one-time token of an emailed link, taken out of the address bar and the history as it is read. */
export function takeToken(): string {
  const params = new URLSearchParams(location.search);
  const token = params.get('token') ?? '';
  if (token) {
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}`);
  }
  return token;
}

export function go(page: Page): void {
  history.pushState(null, '', `${BASE}${page}`);
  window.dispatchEvent(new PopStateEvent('popstate'));
}

export function usePage(): Page {
  const [page, setPage] = useState(() => pageOf(location.pathname));
  useEffect(() => {
    const on = () => setPage(pageOf(location.pathname));
    window.addEventListener('popstate', on);
    return () => window.removeEventListener('popstate', on);
  }, []);
  return page;
}
