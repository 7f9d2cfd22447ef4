import { t } from '../i18n';
import { auth, ApiError } from './auth';
import type { Operation } from './operation';

type GqlError = { message: string; extensions?: { code?: string; field?: string } };

/** How long a query or mutation may take before the console gives up on it and says so (a stalled connection would
 * otherwise leave a form waiting for good). */
export const REQUEST_TIMEOUT_MS = 45_000;

/** Runs a query or mutation as the signed-in member; a refused access token is renewed once and the call repeated.
 * Failures are `ApiError`s whose message a person can act on: the server's own, or the console's when the server could
 * not be reached (`network`), took too long (`timeout`) or answered with no GraphQL result (`unavailable`). */
export async function request<R, V>(op: Operation<R, V>, variables: V, timeoutMs = REQUEST_TIMEOUT_MS): Promise<R> {
  for (let attempt = 0; ; attempt++) {
    const token = await unfailing(auth.accessToken());
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    let response: Response;
    let body: { data?: R; errors?: GqlError[] } | null;
    try {
      response = await fetch('/graphql', {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        body: JSON.stringify({ query: op.text, operationName: op.name, variables }),
        signal: controller.signal,
      });
      body = (await response.json().catch(() => null)) as typeof body;
    } catch {
      throw controller.signal.aborted ? new ApiError(t.errors.timeout, 'timeout') : new ApiError(t.errors.network, 'network');
    } finally {
      clearTimeout(timer);
    }
    if (controller.signal.aborted) throw new ApiError(t.errors.timeout, 'timeout');
    const error = body?.errors?.[0];
    if (error) {
      const code = (error.extensions?.code ?? 'error').toLowerCase();
      if (code === 'unauthenticated' && attempt === 0 && (await unfailing(auth.refresh()))) continue;
      if (code === 'unauthenticated') auth.dropped();
      throw new ApiError(error.message, code, error.extensions?.field);
    }
    if (!response.ok || !body?.data) {
      // A proxy's page or an empty answer (the server restarting, a gateway timing out): nothing to show as is.
      if (response.status >= 500) throw new ApiError(t.errors.unavailable, 'unavailable', undefined, response.status);
      throw new ApiError(t.errors.generic, 'error', undefined, response.status);
    }
    return body.data;
  }
}

/** A token renewal that failed on the way (no answer in time, no connection) as an `ApiError` a person can act on. */
async function unfailing<T>(renewal: Promise<T>): Promise<T> {
  try {
    return await renewal;
  } catch (e) {
    if (e instanceof ApiError) throw e;
    const timedOut = (e as { name?: unknown } | null)?.name === 'AbortError';
    throw timedOut ? new ApiError(t.errors.timeout, 'timeout') : new ApiError(t.errors.network, 'network');
  }
}
