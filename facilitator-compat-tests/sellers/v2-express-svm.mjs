// Seller using @x402/express (v2) with @x402/svm's exact scheme on Solana devnet's CAIP-2 id and
// the stock HTTPFacilitatorClient pointed at FACILITATOR_URL. The fee payer is not configured
// here: the SDK takes it from the facilitator's /supported (`extra.feePayer`), as in production.
// The route is priced in atomic units of the mint (AssetAmount: {amount, asset}).
// Env: FACILITATOR_URL, PORT, PAY_TO, ASSET, AMOUNT, NETWORK.
import express from "express";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { ExactSvmScheme } from "@x402/svm/exact/server";
import { HTTPFacilitatorClient } from "@x402/core/server";

const e = process.env;
const facilitatorClient = new HTTPFacilitatorClient({ url: e.FACILITATOR_URL });
const resourceServer = new x402ResourceServer(facilitatorClient).register(e.NETWORK, new ExactSvmScheme());

const app = express();
app.use(
  paymentMiddleware(
    {
      "GET /paid": {
        accepts: {
          scheme: "exact",
          network: e.NETWORK,
          payTo: e.PAY_TO,
          price: { amount: e.AMOUNT, asset: e.ASSET },
          maxTimeoutSeconds: 60,
        },
        description: "compat test resource (solana)",
        mimeType: "application/json",
      },
    },
    resourceServer,
  ),
);
app.get("/paid", (_req, res) => res.json({ content: "paid content svm" }));
app.get("/health", (_req, res) => res.json({ ok: true }));
const server = app.listen(Number(e.PORT || 0), "127.0.0.1", () =>
  console.log(`Seller listening on ${server.address().port}`),
);
