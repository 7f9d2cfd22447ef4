import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiError } from './auth';
import { request } from './client';
import type { Operation } from './operation';

// Signed out: no token to renew, so each test's fetch sees only the request itself (unless a test renews).
const renewal = vi.hoisted(() => ({ accessToken: async (): Promise<string | null> => null }));
vi.mock('./auth', async (original) => ({
  ...(await original<typeof import('./auth')>()),
  auth: { accessToken: () => renewal.accessToken(), refresh: async () => null, dropped: () => undefined },
}));

const Ping: Operation<{ ping: string }, Record<string, never>> = { name: 'Ping', kind: 'query', text: 'query Ping { ping }' };

async function failure(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ApiError) return e;
    throw e;
  }
  throw new Error('it did not fail');
}

describe('a console request', () => {
  afterEach(() => vi.unstubAllGlobals());

  it('gives up on a server that does not answer in time, and says so', async () => {
    vi.stubGlobal('fetch', (_: string, init: RequestInit) =>
      new Promise((_resolve, reject) => init.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')))),
    );
    const e = await failure(request(Ping, {}, 20));
    expect(e.code).toBe('timeout');
    expect(e.message).toMatch(/did not answer in time/);
  });

  it('says a server it cannot reach cannot be reached, not "network"', async () => {
    vi.stubGlobal('fetch', async () => {
      throw new TypeError('Failed to fetch');
    });
    const e = await failure(request(Ping, {}));
    expect(e.code).toBe('network');
    expect(e.message).toMatch(/cannot be reached/);
  });

  it('shows no proxy page text for an answer without a GraphQL result', async () => {
    vi.stubGlobal('fetch', async () => new Response('<html>502 Bad Gateway</html>', { status: 502, statusText: 'Bad Gateway' }));
    const e = await failure(request(Ping, {}));
    expect(e.code).toBe('unavailable');
    expect(e.message).toMatch(/not answering right now/);
  });

  it('says so when renewing the sign-in fails on the way, rather than leaking the browser error', async () => {
    renewal.accessToken = async () => {
      throw new TypeError('Failed to fetch');
    };
    try {
      const e = await failure(request(Ping, {}));
      expect([e.code, e.message]).toEqual(['network', 'The server cannot be reached. Check the connection and try again.']);
    } finally {
      renewal.accessToken = async () => null;
    }
  });

  it('passes the server own error on', async () => {
    vi.stubGlobal('fetch', async () =>
      new Response(JSON.stringify({ errors: [{ message: 'no such station', extensions: { code: 'NOT_FOUND' } }] }), { status: 200 }),
    );
    const e = await failure(request(Ping, {}));
    expect([e.code, e.message]).toEqual(['not_found', 'no such station']);
  });
});
