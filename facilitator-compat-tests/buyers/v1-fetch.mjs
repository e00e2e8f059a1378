// Buyer using the legacy x402-fetch (v1). Env: SELLER_URL, BUYER_PRIVATE_KEY, MODE=pay|replay.
// Prints `RESULT {json}` in the same shape as buyers/v2-fetch.mjs.
import { createSigner, decodeXPaymentResponse, wrapFetchWithPayment } from "x402-fetch";
import { emit, env, recordingFetch, replay } from "./common.mjs";

const url = env("SELLER_URL");
const mode = process.env.MODE || "pay";
const signer = await createSigner("base-sepolia", env("BUYER_PRIVATE_KEY"));
const rec = recordingFetch();
// The legacy default cap is 0.10 USDC; the harness prices well below it.
const pay = wrapFetchWithPayment(rec.fetch, signer);

async function describe(res) {
  const text = await res.text();
  let body;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = text;
  }
  let settle = null;
  const header = res.headers.get("X-PAYMENT-RESPONSE");
  if (header) {
    try {
      settle = decodeXPaymentResponse(header);
    } catch (e) {
      settle = { decodeError: String(e.message || e) };
    }
  }
  const reason = res.status === 402 && body && typeof body === "object" ? (body.error ?? null) : null;
  return { status: res.status, settle, reason, body };
}

try {
  const res = await pay(url, { method: "GET", signal: AbortSignal.timeout(90_000) });
  const out = { buyer: "x402-fetch", ...(await describe(res)) };
  if (mode === "replay" && rec.state.paid) out.replay = await describe(await replay(rec.state.paid));
  emit(out);
} catch (e) {
  emit({ buyer: "x402-fetch", error: String(e && e.message ? e.message : e) });
}
