// Signing in as a web app should: the access token lives in memory only (never in storage or a URL); the refresh
// token lives in an HttpOnly cookie the server sets (`x-switchyard-refresh: cookie`), which no script can read.
// A reload refreshes through the cookie; an access token is renewed a minute before it expires.

export type Tokens = { accessToken: string; expiresAt: number; tenantId: string };

export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly field?: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

type Listener = (signedIn: boolean) => void;

/** How long a sign-in, refresh or sign-out request may take. */
export const AUTH_TIMEOUT_MS = 30_000;

const COOKIE_MODE = { 'x-switchyard-refresh': 'cookie', 'content-type': 'application/json' };

/** Reads an error answer of the REST API (`{ error: { code, message, field } }`) into an ApiError. */
export async function restError(response: Response): Promise<ApiError> {
  try {
    const body = await response.json();
    const e = body?.error ?? body;
    return new ApiError(e?.message ?? response.statusText, e?.code ?? 'error', e?.field, response.status);
  } catch {
    return new ApiError(response.statusText, 'error', undefined, response.status);
  }
}

export class Auth {
  private tokens: Tokens | null = null;
  private refreshing: Promise<Tokens | null> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private listeners = new Set<Listener>();

  constructor(
    private readonly fetcher: typeof fetch = (...a) => fetch(...a),
    private readonly now: () => number = () => Date.now(),
  ) {}

  onChange(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  get signedIn(): boolean {
    return this.tokens !== null;
  }

  private set(tokens: Tokens | null) {
    this.tokens = tokens;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (tokens) {
      const inMs = Math.max(5_000, tokens.expiresAt - this.now() - 60_000);
      // A renewal that fails on the way is tried again by the next request that needs a token.
      this.timer = setTimeout(() => void this.refresh().catch(() => undefined), inMs);
    }
    this.listeners.forEach((l) => l(tokens !== null));
  }

  /** Gives up after `AUTH_TIMEOUT_MS` (an `AbortError`): a stalled refresh would otherwise hold every request that
   * waits for it. */
  private async post(path: string, body: unknown): Promise<Response> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), AUTH_TIMEOUT_MS);
    try {
      const response = await this.fetcher(path, {
        method: 'POST',
        headers: COOKIE_MODE,
        credentials: 'same-origin',
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      // The body too is read within the time allowed: a stalled one would hold a shared refresh for good.
      const text = await response.text();
      return new Response(text === '' ? null : text, { status: response.status, statusText: response.statusText, headers: response.headers });
    } finally {
      clearTimeout(timer);
    }
  }

  private accept(pair: { access_token: string; expires_in: number; tenant_id: string }): Tokens {
    const tokens = {
      accessToken: pair.access_token,
      expiresAt: this.now() + pair.expires_in * 1000,
      tenantId: pair.tenant_id,
    };
    this.set(tokens);
    return tokens;
  }

  async login(email: string, password: string): Promise<void> {
    const r = await this.post('/api/v1/auth/login', { email, password });
    if (!r.ok) throw await restError(r);
    this.accept(await r.json());
  }

  /** Renews the access token through the cookie; null (signed out) when the cookie is gone or refused. Concurrent
   * callers share one request: a refresh token is spent once. */
  refresh(): Promise<Tokens | null> {
    if (!this.refreshing) {
      this.refreshing = (async () => {
        try {
          const r = await this.post('/api/v1/auth/refresh', {});
          if (!r.ok) {
            this.set(null);
            return null;
          }
          return this.accept(await r.json());
        } finally {
          this.refreshing = null;
        }
      })();
    }
    return this.refreshing;
  }

  /** A current access token, renewed when it is about to expire; null when signed out. */
  async accessToken(): Promise<string | null> {
    if (this.tokens && this.tokens.expiresAt - this.now() > 30_000) return this.tokens.accessToken;
    return (await this.refresh())?.accessToken ?? null;
  }

  async logout(): Promise<void> {
    try {
      await this.post('/api/v1/auth/logout', {});
    } finally {
      this.set(null);
    }
  }

  /** Forgets the tokens without asking the server (after the server signed this login out everywhere). */
  dropped(): void {
    this.set(null);
  }
}

export const auth = new Auth();
