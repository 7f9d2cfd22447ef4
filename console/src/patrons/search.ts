import { useEffect, useState } from 'react';
import { request } from '../api/client';
import { FindPatrons, type FindPatronsResult } from '../api/generated';

/** Patrons matching `search` (looked up 200 ms after the last keystroke), and the one chosen: `picked` when the
 * list shows it, else the list's first. The last search's list goes at once and a late answer to it is dropped, so
 * a quick click never takes a patron the list no longer shows. */
export function usePatronSearch(search: string, picked: string): { found: FindPatronsResult['patrons']; chosen: string } {
  const [found, setFound] = useState<FindPatronsResult['patrons']>([]);
  useEffect(() => {
    setFound([]);
    if (!search.trim()) return;
    let current = true;
    const timer = setTimeout(() => void request(FindPatrons, { search }).then((r) => current && setFound(r.patrons)), 200);
    return () => {
      current = false;
      clearTimeout(timer);
    };
  }, [search]);
  const chosen = found.some((p) => p.id === picked) ? picked : found[0]?.id ?? '';
  return { found, chosen };
}
