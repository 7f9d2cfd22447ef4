import { describe, expect, it, vi } from 'vitest';
import { Auth, AUTH_TIMEOUT_MS } from './auth';

function pair(token: string) {
  return new Response(JSON.stringify({ access_token: token, refresh_token: '', expires_in: 900, tenant_id: 't' }), { status: 200 });
}

describe('the console sign-in', () => {
  it('asks for the refresh token in a cookie and keeps the access token in memory only', async () => {
    const fetcher = vi.fn(async () => pair('A1'));
    const auth = new Auth(fetcher as unknown as typeof fetch);
    await auth.login('o@example.com', 'secret-password');
    const [path, init] = fetcher.mock.calls[0] as unknown as [string, RequestInit];
    expect(path).toBe('/api/v1/auth/login');
    expect((init.headers as Record<string, string>)['x-switchyard-refresh']).toBe('cookie');
    expect(init.credentials).toBe('same-origin');
    expect(await auth.accessToken()).toBe('A1');
    expect(localStorage.length).toBe(0);
    expect(sessionStorage.length).toBe(0);
    expect(document.cookie).toBe('');
  });

  it('spends the refresh cookie once for concurrent callers', async () => {
    let now = 0;
    const fetcher = vi.fn(async (path: string) => (path.endsWith('/login') ? pair('A1') : pair('A2')));
    const auth = new Auth(fetcher as unknown as typeof fetch, () => now);
    await auth.login('o@example.com', 'secret-password');
    now = 900_000; // expired
    const tokens = await Promise.all([auth.accessToken(), auth.accessToken(), auth.accessToken()]);
    expect(tokens).toEqual(['A2', 'A2', 'A2']);
    expect(fetcher.mock.calls.filter((c) => String(c[0]).endsWith('/refresh'))).toHaveLength(1);
  });

  it('is signed out when the refresh is refused', async () => {
    const fetcher = vi.fn(async () => new Response('{"error":{"code":"unauthenticated","message":"no"}}', { status: 401 }));
    const auth = new Auth(fetcher as unknown as typeof fetch);
    const seen: boolean[] = [];
    auth.onChange((s) => seen.push(s));
    expect(await auth.refresh()).toBeNull();
    expect(auth.signedIn).toBe(false);
    expect(seen).toEqual([false]);
  });

  it('gives up on a refresh that gets no answer, so the next one asks again', async () => {
    vi.useFakeTimers();
    try {
      let calls = 0;
      const fetcher = vi.fn((_: string, init: RequestInit) => {
        calls += 1;
        if (calls > 1) return Promise.resolve(pair('A2'));
        return new Promise<Response>((_resolve, reject) =>
          init.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))),
        );
      });
      const auth = new Auth(fetcher as unknown as typeof fetch);
      const stalled = auth.refresh();
      const failed = expect(stalled).rejects.toMatchObject({ name: 'AbortError' });
      await vi.advanceTimersByTimeAsync(AUTH_TIMEOUT_MS);
      await failed;
      expect((await auth.refresh())?.accessToken).toBe('A2');
    } finally {
      vi.useRealTimers();
    }
  });

  it('reports a refused login with the server message', async () => {
    const fetcher = vi.fn(
      async () => new Response('{"error":{"code":"invalid_credentials","message":"email or password is wrong"}}', { status: 401 }),
    );
    const auth = new Auth(fetcher as unknown as typeof fetch);
    await expect(auth.login('o@example.com', 'nope')).rejects.toMatchObject({ code: 'invalid_credentials', message: 'email or password is wrong' });
    expect(auth.signedIn).toBe(false);
  });
});
