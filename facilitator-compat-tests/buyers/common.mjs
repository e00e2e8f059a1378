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

/** The response body as JSON when it parses, else the text. */
export async function readBody(res) {
  const text = await res.text();
  try {
    return text ? JSON.parse(text) : undefined;
  } catch {
    return text;
  }
}

/** Status, decoded settle response and the refusal reason, as the v2 SDK's HTTP client parses them. */
export async function describeV2(res, http) {
  const body = await readBody(res);
  const get = (n) => res.headers.get(n);
  let settle = null;
  let reason = null;
  try {
    if (get("PAYMENT-RESPONSE") || get("X-PAYMENT-RESPONSE")) settle = http.getPaymentSettleResponse(get);
  } catch (e) {
    settle = { decodeError: String(e.message || e) };
  }
  if (res.status === 402) {
    try {
      reason = http.getPaymentRequiredResponse(get, body).error ?? null;
    } catch (e) {
      reason = `unparseable 402: ${e.message || e}`;
    }
    // A 402 after a failed settle carries its reason in the decoded PAYMENT-RESPONSE instead.
    if ((!reason || reason.startsWith("unparseable")) && settle && settle.errorReason) reason = settle.errorReason;
  }
  return { status: res.status, settle, reason, body };
}

/** Pays `url` once (and in replay mode re-sends the identical paid request), printing the result. */
export async function runBuyer({ buyer, url, mode, pay, rec, describe }) {
  try {
    const res = await pay(url, { method: "GET", signal: AbortSignal.timeout(90_000) });
    const out = { buyer, ...(await describe(res)) };
    if (mode === "replay" && rec.state.paid) out.replay = await describe(await replay(rec.state.paid));
    emit(out);
  } catch (e) {
    emit({ buyer, error: String(e && e.message ? e.message : e) });
  }
}
