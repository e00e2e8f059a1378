// Seller using the legacy x402-express (v1) with FACILITATOR_URL as its facilitator; the price is
// an ERC20TokenAmount of the deployed test token on "base-sepolia" (anvil runs chain id 84532).
// Env: FACILITATOR_URL, PORT, PAY_TO, ASSET, TOKEN_NAME, TOKEN_VERSION, AMOUNT.
import express from "express";
import { paymentMiddleware } from "x402-express";

const e = process.env;
const app = express();
app.use(
  paymentMiddleware(
    e.PAY_TO,
    {
      "GET /paid": {
        price: {
          amount: e.AMOUNT,
          asset: { address: e.ASSET, decimals: 6, eip712: { name: e.TOKEN_NAME, version: e.TOKEN_VERSION } },
        },
        network: "base-sepolia",
        config: { description: "compat test resource", mimeType: "application/json", maxTimeoutSeconds: 120 },
      },
    },
    { url: e.FACILITATOR_URL },
  ),
);
app.get("/paid", (_req, res) => res.json({ content: "paid content v1" }));
app.get("/health", (_req, res) => res.json({ ok: true }));
const server = app.listen(Number(e.PORT || 0), "127.0.0.1", () =>
  console.log(`Seller listening on ${server.address().port}`),
);
