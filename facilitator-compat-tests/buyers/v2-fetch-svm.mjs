// Buyer using @x402/fetch (v2 client) with @x402/svm's exact scheme on Solana devnet's CAIP-2 id,
// its RPC pointed at the local node. Env: SELLER_URL, BUYER_SVM_KEY (the 64-byte keypair as a
// JSON array, as solana-keygen writes it), SVM_RPC_URL, NETWORK, ASSET, AMOUNT, MODE=pay|replay.
// Prints `RESULT {json}` in the shape of buyers/v2-fetch.mjs.
import { createKeyPairSignerFromBytes } from "@solana/kit";
import { wrapFetchWithPayment, x402Client, x402HTTPClient } from "@x402/fetch";
import { ExactSvmScheme } from "@x402/svm/exact/client";
import { describeV2, env, recordingFetch, runBuyer } from "./common.mjs";

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

await runBuyer({ buyer: "@x402/fetch + @x402/svm", url, mode, pay, rec, describe: (res) => describeV2(res, http) });
