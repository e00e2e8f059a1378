// Buyer using the legacy x402-fetch (v1). Env: SELLER_URL, BUYER_PRIVATE_KEY, MODE=pay|replay.
// Prints `RESULT {json}` in the same shape as buyers/v2-fetch.mjs.
import { createSigner, decodeXPaymentResponse, wrapFetchWithPayment } from "x402-fetch";
import { env, readBody, recordingFetch, runBuyer } from "./common.mjs";

const url = env("SELLER_URL");
const mode = process.env.MODE || "pay";
const signer = await createSigner("base-sepolia", env("BUYER_PRIVATE_KEY"));
const rec = recordingFetch();
// The legacy default cap is 0.10 USDC; the harness prices well below it.
const pay = wrapFetchWithPayment(rec.fetch, signer);

async function describe(res) {
  const body = await readBody(res);
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

await runBuyer({ buyer: "x402-fetch", url, mode, pay, rec, describe });
