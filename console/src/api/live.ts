import { createClient, type Client } from 'graphql-ws';
import { auth } from './auth';
import type { Operation } from './operation';

let client: Client | null = null;
let connected = false;
const watchers = new Set<(connected: boolean) => void>();
function connection(state: boolean) {
  connected = state;
  watchers.forEach((w) => w(state));
}

/** The one `/graphql/ws` connection (graphql-transport-ws), signed in with the current access token and opened
 * again with a fresh one when the server closes it for an expired token (4403). */
function live(): Client {
  if (!client) {
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql/ws`;
    client = createClient({
      url,
      lazy: true,
      retryAttempts: Infinity,
      shouldRetry: () => auth.signedIn,
      retryWait: async (retries) => {
        await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** retries, 10_000)));
      },
      connectionParams: async () => ({ authorization: `Bearer ${(await auth.accessToken()) ?? ''}` }),
      on: { connected: () => connection(true), closed: () => connection(false) },
    });
  }
  return client;
}

/** Closes the connection (signing out). */
export function closeLive(): void {
  client?.dispose();
  client = null;
  connection(false);
}

export type LiveHandlers<R> = {
  next: (data: R) => void;
  /** The connection is (re)established or lost. */
  status?: (connected: boolean) => void;
  error?: (e: unknown) => void;
};

/** Subscribes; returns the unsubscribe function. A subscription that completes (the server's resync) is opened
 * again with the same variables. */
export function subscribe<R, V>(op: Operation<R, V>, variables: V, h: LiveHandlers<R>): () => void {
  let stopped = false;
  let stop = () => {};
  const watch = (state: boolean) => h.status?.(state);
  watchers.add(watch);
  const open = () => {
    const cancel = live().subscribe<R>(
      { query: op.text, operationName: op.name, variables: variables as Record<string, unknown> },
      {
        next: (m) => {
          if (m.data) h.next(m.data as R);
        },
        error: (e) => h.error?.(e),
        complete: () => {
          if (!stopped) open();
        },
      },
    );
    stop = cancel;
  };
  open();
  watch(connected);
  return () => {
    stopped = true;
    watchers.delete(watch);
    stop();
  };
}
