// Buyer using @x402/fetch (v2 client) with @x402/svm's exact scheme on Solana devnet's CAIP-2 id,
// its RPC pointed at the local node. Env: SELLER_URL, BUYER_SVM_KEY (the 64-byte keypair as a
// JSON array, as solana-keygen writes it), SVM_RPC_URL, NETWORK, ASSET, AMOUNT, MODE=pay|replay.
// Prints `RESULT {json}` in the shape of buyers/v2-fetch.mjs.
import { createKeyPairSignerFromBytes } from "@solana/kit";
import { wrapFetchWithPayment, x402Client, x402HTTPClient } from "@x402/fetch";
import { ExactSvmScheme } from "@x402/svm/exact/client";
import { emit, env, recordingFetch, replay } from "./common.mjs";

const url = env("SELLER_URL");
const mode = process.env.MODE || "pay";
const network = env("NETWORK");
const signer = await createKeyPairSignerFromBytes(Uint8Array.from(JSON.parse(env("BUYER_SVM_KEY"))));

const client = new x402Client();
client.register(network, new ExactSvmScheme(signer, { rpcUrl: env("SVM_RPC_URL") }));
// Opt the mint in explicitly (the documented knob), capped at the price the harness charges.
client.setSpendControls({ allowedAssets: [{ network, asset: env("ASSET"), maxAmountPerPayment: env("AMOUNT") }] });
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
    if (get("PAYMENT-RESPONSE")) settle = http.getPaymentSettleResponse(get);
  } catch (e) {
    settle = { decodeError: String(e.message || e) };
  }
  if (res.status === 402) {
    try {
      reason = http.getPaymentRequiredResponse(get, body).error ?? null;
    } catch (e) {
      reason = `unparseable 402: ${e.message || e}`;
    }
    if ((!reason || reason.startsWith("unparseable")) && settle && settle.errorReason) reason = settle.errorReason;
  }
  return { status: res.status, settle, reason, body };
}

try {
  const res = await pay(url, { method: "GET", signal: AbortSignal.timeout(90_000) });
  const out = { buyer: "@x402/fetch + @x402/svm", ...(await describe(res)) };
  if (mode === "replay" && rec.state.paid) out.replay = await describe(await replay(rec.state.paid));
  emit(out);
} catch (e) {
  emit({ buyer: "@x402/fetch + @x402/svm", error: String(e && e.message ? e.message : e) });
}
