// The worker half of the synchronous transport: the component's imports are
// synchronous, so the main thread blocks on Atomics.wait while this thread
// runs the asynchronous fetch and posts the outcome back.
import { workerData } from 'node:worker_threads';

const { requests, replies, signal } = workerData;

requests.on('message', async ({ id, method, url, headers, body, timeoutMs }) => {
  let reply;
  try {
    const response = await fetch(url, {
      method: method.toUpperCase(),
      headers,
      body: body.length > 0 ? body : undefined,
      redirect: 'manual', // a redirect could carry the bearer token to another host
      signal: AbortSignal.timeout(timeoutMs), // covers connecting, sending and reading the body
    });
    const bytes = new Uint8Array(await response.arrayBuffer());
    reply = { id, response: { status: response.status, headers: [...response.headers], body: bytes } };
  } catch (error) {
    reply = { id, error: transportError(error) };
  }
  replies.postMessage(reply);
  Atomics.add(signal, 0, 1);
  Atomics.notify(signal, 0);
});

// The WIT `transport-error` variant. fetch names no URL or header in its
// messages, so nothing secret can leak through them.
function transportError(error) {
  if (error.name === 'TimeoutError' || error.name === 'AbortError') return { tag: 'timeout' };
  const cause = error.cause ?? {};
  const connectCodes = ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ECONNRESET', 'UND_ERR_CONNECT_TIMEOUT'];
  if (connectCodes.includes(cause.code)) return { tag: 'connect', val: `${cause.code}: ${cause.message}` };
  return { tag: 'other', val: String(cause.message ?? error.message) };
}
