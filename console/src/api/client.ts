import { auth, ApiError } from './auth';
import type { Operation } from './operation';

type GqlError = { message: string; extensions?: { code?: string; field?: string } };

/** Runs a query or mutation as the signed-in member; a refused access token is renewed once and the call repeated. */
export async function request<R, V>(op: Operation<R, V>, variables: V): Promise<R> {
  for (let attempt = 0; ; attempt++) {
    const token = await auth.accessToken();
    let response: Response;
    try {
      response = await fetch('/graphql', {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        body: JSON.stringify({ query: op.text, operationName: op.name, variables }),
      });
    } catch {
      throw new ApiError('network', 'network');
    }
    const body = (await response.json().catch(() => null)) as { data?: R; errors?: GqlError[] } | null;
    const error = body?.errors?.[0];
    if (error) {
      const code = (error.extensions?.code ?? 'error').toLowerCase();
      if (code === 'unauthenticated' && attempt === 0 && (await auth.refresh())) continue;
      if (code === 'unauthenticated') auth.dropped();
      throw new ApiError(error.message, code, error.extensions?.field);
    }
    if (!response.ok || !body?.data) throw new ApiError(response.statusText, 'error', undefined, response.status);
    return body.data;
  }
}
