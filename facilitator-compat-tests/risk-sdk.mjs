// The TypeScript buyer SDK (sdk/ts) against a running Gatehouse: a proven risk session, a
// trace upload, and a payment through @x402/fetch whose payload carries the gatehouse-risk
// extension. A tiny seller in this process answers 402, then forwards the paid request's payload
// to Gatehouse's /verify untouched (as seller middleware does) and returns Gatehouse's answer.
// Env: GATEHOUSE_URL, NETWORK (CAIP-2), ASSET, PAY_TO, AMOUNT. Prints `RESULT {json}`; exits
// non-zero when a check fails.
import http from "node:http";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { decodePaymentSignatureHeader, encodePaymentRequiredHeader } from "@x402/core/http";
import { GatehouseRisk, riskHeaders, wrapFetchWithRisk } from "../sdk/ts/index.mjs";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is required`);
  return v;
};
const gatehouse = env("GATEHOUSE_URL");
const network = env("NETWORK");
const requirements = {
  scheme: "exact",
  network,
  amount: env("AMOUNT"),
  asset: env("ASSET"),
  payTo: env("PAY_TO"),
  maxTimeoutSeconds: 60,
  extra: { name: "USDC", version: "2" },
};
const checks = [];
const check = (name, ok, detail) => checks.push({ name, ok: Boolean(ok), detail });

const seen = [];
const seller = http.createServer(async (req, res) => {
  const header = req.headers["payment-signature"];
  const url = `http://${req.headers.host}${req.url}`;
  if (!header) {
    const required = { x402Version: 2, error: "payment required", resource: { url, description: "risk sdk test", mimeType: "application/json" }, accepts: [requirements] };
    res.writeHead(402, { "PAYMENT-REQUIRED": encodePaymentRequiredHeader(required), "content-type": "application/json" });
    return res.end("{}");
  }
  const paymentPayload = decodePaymentSignatureHeader(header);
  seen.push(paymentPayload);
  const v = await fetch(`${gatehouse}/verify`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ x402Version: 2, paymentPayload, paymentRequirements: requirements }),
  });
  const answer = await v.json();
  res.writeHead(200, { "content-type": "application/json", "x-risk-decision": v.headers.get("x-risk-decision") ?? "" });
  res.end(JSON.stringify(answer));
});
await new Promise((r) => seller.listen(0, "127.0.0.1", r));
const sellerUrl = `http://127.0.0.1:${seller.address().port}/paid`;

try {
  const account = privateKeyToAccount(generatePrivateKey());
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  client.setSpendControls({ allowedAssets: [{ network, asset: requirements.asset, maxAmountPerPayment: requirements.amount }] });
  const { fetch: pay, handles, session } = await wrapFetchWithRisk(fetch, client, {
    gatehouseUrl: gatehouse,
    session: { agentDid: "did:example:ts-agent", account, device: { ua: "risk-sdk.mjs" } },
    trace: { task: "buy the premium report", parameters: { id: 7 }, events: [{ type: "user_input", content: "buy it" }, { type: "tool_call", name: "pay", arguments: { url: sellerUrl } }] },
    wrapFetchWithPayment,
  });
  check("session is wallet-proven", session.wallet_proven === true, session);
  check("trace uploaded", typeof handles.tid === "string" && handles.tid.length === 36, handles);
  const res = await pay(sellerUrl, { method: "GET", signal: AbortSignal.timeout(30_000) });
  const answer = await res.json();
  const ext = seen[0]?.extensions?.["gatehouse-risk"]?.info ?? {};
  check("payload carried the extension", ext.sid === handles.sid && ext.tid === handles.tid, seen[0]?.extensions);
  check("gatehouse approved", answer.isValid === true, answer);
  check("decision in the verify extensions", answer.extensions?.["gatehouse-risk"]?.decision === "allow", answer.extensions);
  check("X-Risk-Decision header", res.headers.get("x-risk-decision") === "allow", res.headers.get("x-risk-decision"));
  check("x402-secure headers", riskHeaders(handles)["X-RISK-SESSION"] === handles.sid, riskHeaders(handles));
  // A schema error surfaces as a GatehouseError naming the field.
  let field = null;
  try {
    await new GatehouseRisk({ baseUrl: gatehouse }).uploadTrace(handles.sid, { events: [{ content: "no type" }] });
  } catch (e) {
    field = e.body?.error?.field;
  }
  check("trace schema error names the field", field === "agent_trace.events[0].type", field);
} catch (e) {
  check("no exception", false, String(e?.stack ?? e));
} finally {
  seller.close();
}
const failed = checks.filter((c) => !c.ok);
console.log(`RESULT ${JSON.stringify({ passed: checks.length - failed.length, failed })}`);
process.exit(failed.length ? 1 : 0);
