// Shared helpers for the JS buyers: record the paid request so the harness can replay it
// byte-for-byte ("the response was lost, the buyer retries"), and print one JSON result line.

const PAYMENT_HEADERS = ["payment-signature", "x-payment"];

/** Wraps a fetch so the last request that carried a payment header is remembered. */
export function recordingFetch(inner = globalThis.fetch) {
  const state = { paid: null };
  const wrapped = async (input, init) => {
    const req = input instanceof Request ? input : new Request(input, init);
    const headers = {};
    req.headers.forEach((v, k) => (headers[k] = v));
    if (PAYMENT_HEADERS.some((h) => h in headers)) {
      state.paid = { url: req.url, method: req.method, headers };
    }
    return inner(req.clone());
  };
  return { fetch: wrapped, state };
}

/** Re-sends a recorded paid request verbatim with plain fetch (bounded). */
export async function replay(paid) {
  return fetch(paid.url, {
    method: paid.method,
    headers: paid.headers,
    signal: AbortSignal.timeout(60_000),
  });
}

export function emit(result) {
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

export function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`${name} is required`);
    process.exit(2);
  }
  return v;
}
