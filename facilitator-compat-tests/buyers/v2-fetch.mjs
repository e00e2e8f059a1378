// Buyer using @x402/fetch (v2 client; also registers the v1 exact scheme so it can pay legacy
// sellers). Env: SELLER_URL, BUYER_PRIVATE_KEY, ASSET, AMOUNT, MODE=pay|replay.
// Prints `RESULT {json}`: status, decoded settle response, the refusal reason the SDK parsed,
// and in replay mode the outcome of re-sending the identical paid request.
import { privateKeyToAccount } from "viem/accounts";
import { wrapFetchWithPayment, x402Client, x402HTTPClient } from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { emit, env, recordingFetch, replay } from "./common.mjs";

const url = env("SELLER_URL");
const account = privateKeyToAccount(env("BUYER_PRIVATE_KEY"));
const mode = process.env.MODE || "pay";

const client = new x402Client();
registerExactEvmScheme(client, { signer: account });
// The test token is not one of the SDK's default assets: opt it in (the documented knob), capped
// at the price the harness charges, for both the v2 and the v1 network name.
const asset = env("ASSET");
const cap = env("AMOUNT");
client.setSpendControls({
  allowedAssets: ["eip155:84532", "base-sepolia"].map((network) => ({ network, asset, maxAmountPerPayment: cap })),
});
const http = new x402HTTPClient(client);
const rec = recordingFetch();
const pay = wrapFetchWithPayment(rec.fetch, client);

async function describe(res) {
  const text = await res.text();
  let body;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = text;
  }
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

try {
  const res = await pay(url, { method: "GET", signal: AbortSignal.timeout(90_000) });
  const out = { buyer: "@x402/fetch", ...(await describe(res)) };
  if (mode === "replay" && rec.state.paid) out.replay = await describe(await replay(rec.state.paid));
  emit(out);
} catch (e) {
  emit({ buyer: "@x402/fetch", error: String(e && e.message ? e.message : e) });
}
