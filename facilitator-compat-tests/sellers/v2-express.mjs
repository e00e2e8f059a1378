// Seller using @x402/express (v2) with the stock HTTPFacilitatorClient pointed at FACILITATOR_URL;
// nothing else about the SDK is changed. The route is priced in atomic units of the deployed
// test token (AssetAmount: {amount, asset, extra:{name, version}}).
// Env: FACILITATOR_URL, PORT, PAY_TO, ASSET, TOKEN_NAME, TOKEN_VERSION, AMOUNT.
import express from "express";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { ExactEvmScheme } from "@x402/evm/exact/server";
import { HTTPFacilitatorClient } from "@x402/core/server";

const e = process.env;
const facilitatorClient = new HTTPFacilitatorClient({ url: e.FACILITATOR_URL });
const resourceServer = new x402ResourceServer(facilitatorClient).register("eip155:84532", new ExactEvmScheme());

const app = express();
app.use(
  paymentMiddleware(
    {
      "GET /paid": {
        accepts: {
          scheme: "exact",
          network: "eip155:84532",
          payTo: e.PAY_TO,
          price: { amount: e.AMOUNT, asset: e.ASSET, extra: { name: e.TOKEN_NAME, version: e.TOKEN_VERSION } },
          maxTimeoutSeconds: 120,
        },
        description: "compat test resource",
        mimeType: "application/json",
      },
    },
    resourceServer,
  ),
);
app.get("/paid", (_req, res) => res.json({ content: "paid content v2" }));
app.get("/health", (_req, res) => res.json({ ok: true }));
const server = app.listen(Number(e.PORT || 0), "127.0.0.1", () =>
  console.log(`Seller listening on ${server.address().port}`),
);
