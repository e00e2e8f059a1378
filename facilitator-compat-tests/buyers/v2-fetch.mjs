// Buyer using @x402/fetch (v2 client; also registers the v1 exact scheme so it can pay legacy
// sellers). Env: SELLER_URL, BUYER_PRIVATE_KEY, ASSET, AMOUNT, MODE=pay|replay.
// Prints `RESULT {json}`: status, decoded settle response, the refusal reason the SDK parsed,
// and in replay mode the outcome of re-sending the identical paid request.
import { privateKeyToAccount } from "viem/accounts";
import { wrapFetchWithPayment, x402Client, x402HTTPClient } from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { describeV2, env, recordingFetch, runBuyer } from "./common.mjs";

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

await runBuyer({ buyer: "@x402/fetch", url, mode, pay, rec, describe: (res) => describeV2(res, http) });
