// Reference x402 facilitator for the compatibility harness: a thin HTTP server around
// @x402/core's x402Facilitator with @x402/evm's exact scheme (v2 on eip155:84532, v1 on the
// legacy network names), signing with an anvil dev key against the local anvil RPC.
//
// It is the upstream that Gatehouse forwards to. Besides the facilitator endpoints it keeps a
// log of every /verify and /settle call (GET /__calls) so the harness can prove that a payment
// Gatehouse refused never reached the upstream's settle.
//
// With SVM_RPC_URL and SVM_FACILITATOR_KEY it also settles Solana devnet with @x402/svm's exact
// scheme against that node (svm-test-node), its fee payer being that keypair.
//
// Env: RPC_URL (anvil), FACILITATOR_PRIVATE_KEY (0x…), PORT (0 = pick a free port), optional
// SVM_RPC_URL and SVM_FACILITATOR_KEY (the 64-byte keypair as a JSON array).
// Prints "Facilitator listening on <port>" once ready.

import express from "express";
import { createWalletClient, defineChain, http, publicActions } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { x402Facilitator } from "@x402/core/facilitator";
import { toFacilitatorEvmSigner } from "@x402/evm";
import { registerExactEvmScheme } from "@x402/evm/exact/facilitator";
import { createKeyPairSignerFromBytes } from "@solana/kit";
import { toFacilitatorSvmSigner } from "@x402/svm";
import { registerExactSvmScheme } from "@x402/svm/exact/facilitator";

const rpcUrl = process.env.RPC_URL;
const key = process.env.FACILITATOR_PRIVATE_KEY;
if (!rpcUrl || !key) {
  console.error("RPC_URL and FACILITATOR_PRIVATE_KEY are required");
  process.exit(2);
}

// anvil runs with --chain-id 84532 so the SDKs' built-in Base Sepolia ids apply unchanged.
const localBaseSepolia = defineChain({
  id: 84532,
  name: "anvil (base-sepolia id)",
  nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
  rpcUrls: { default: { http: [rpcUrl] } },
});

const account = privateKeyToAccount(key);
const client = createWalletClient({ account, chain: localBaseSepolia, transport: http(rpcUrl) }).extend(
  publicActions,
);

const signer = toFacilitatorEvmSigner(
  {
    address: account.address,
    readContract: (args) => client.readContract({ ...args, args: args.args || [] }),
    verifyTypedData: (args) => client.verifyTypedData(args),
    writeContract: (args) => client.writeContract({ ...args, args: args.args || [] }),
    sendTransaction: (args) => client.sendTransaction(args),
    waitForTransactionReceipt: (args) => client.waitForTransactionReceipt(args),
    getCode: (args) => client.getCode(args),
  },
  { confirmationTimeoutMs: 30_000 },
);

const facilitator = new x402Facilitator();
registerExactEvmScheme(facilitator, { signer, networks: "eip155:84532" });
if (process.env.SVM_RPC_URL && process.env.SVM_FACILITATOR_KEY) {
  const keypair = await createKeyPairSignerFromBytes(Uint8Array.from(JSON.parse(process.env.SVM_FACILITATOR_KEY)));
  registerExactSvmScheme(facilitator, {
    signer: toFacilitatorSvmSigner(keypair, { defaultRpcUrl: process.env.SVM_RPC_URL }),
    networks: "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
  });
}

/** Every verify/settle call, in arrival order, for the harness's "nothing reached settle" checks. */
const calls = [];

function nonceOf(paymentPayload) {
  const auth = paymentPayload && paymentPayload.payload && paymentPayload.payload.authorization;
  return auth && typeof auth.nonce === "string" ? auth.nonce.toLowerCase() : null;
}

const app = express();
app.use(express.json({ limit: "1mb" }));

app.get("/health", (_req, res) => res.json({ status: "ok" }));
app.get("/supported", (_req, res) => res.json(facilitator.getSupported()));
app.get("/__calls", (_req, res) => res.json(calls));

for (const endpoint of ["verify", "settle"]) {
  app.post(`/${endpoint}`, async (req, res) => {
    const { paymentPayload, paymentRequirements } = req.body || {};
    if (!paymentPayload || !paymentRequirements) {
      return res.status(400).json({ error: "Missing paymentPayload or paymentRequirements" });
    }
    const entry = {
      endpoint,
      x402Version: paymentPayload.x402Version,
      nonce: nonceOf(paymentPayload),
      at: Date.now(),
    };
    calls.push(entry);
    try {
      const result =
        endpoint === "verify"
          ? await facilitator.verify(paymentPayload, paymentRequirements)
          : await facilitator.settle(paymentPayload, paymentRequirements);
      entry.result = result;
      res.json(result);
    } catch (err) {
      entry.error = String(err && err.message ? err.message : err);
      res.status(500).json({ error: entry.error });
    }
  });
}

const server = app.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`Facilitator listening on ${server.address().port}`);
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => server.close(() => process.exit(0)));
