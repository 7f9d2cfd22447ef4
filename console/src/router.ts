import { useEffect, useState } from 'react';

export type Page = 'login' | 'signup' | 'forgot' | 'floor' | 'sessions' | 'patrons' | 'staff' | 'reports' | 'chargers' | 'settings' | 'setup' | 'work' | 'rentals';
const PAGES: Page[] = ['login', 'signup', 'forgot', 'floor', 'sessions', 'patrons', 'staff', 'reports', 'chargers', 'settings', 'setup', 'work', 'rentals'];
const BASE = '/console/';

/** The page a console path names (`/console/floor` → floor); unknown paths go to the floor. */
export function pageOf(path: string): Page {
  const name = path.startsWith(BASE) ? path.slice(BASE.length).split('/')[0] : '';
  return (PAGES as string[]).includes(name) ? (name as Page) : 'floor';
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
