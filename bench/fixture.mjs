// Benchmark fixture: deploys the test token on a running anvil (--chain-id 84532), funds the
// buyer, installs the test Multicall3, and writes N distinct signed EIP-3009 payments as v2
// /verify bodies, one JSON object per line. Prints the token address.
// Run through the compat harness's node_modules (bench/compare.sh links it there):
//   node --preserve-symlinks --preserve-symlinks-main <link> RPC_URL N OUT_FILE
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createPublicClient, createWalletClient, defineChain, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";

const [rpcUrl, nArg, out] = process.argv.slice(2);
const N = Number(nArg || 2000);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const KEYS = {
  deployer: "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  buyer: "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
};
const PAY_TO = "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f"; // anvil dev account #7
const MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11";
const AMOUNT = 10_000n;
const MAX_TIMEOUT = 900; // the payments stay valid for the whole run

const artifact = (name) => JSON.parse(fs.readFileSync(path.join(REPO, "contracts", "out", `${name}.json`), "utf8"));
const hex = (b) => (b.startsWith("0x") ? b : `0x${b}`);
const chain = defineChain({
  id: 84532,
  name: "anvil",
  nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
  rpcUrls: { default: { http: [rpcUrl] } },
});
const pub = createPublicClient({ chain, transport: http(rpcUrl) });
const deployer = createWalletClient({ account: privateKeyToAccount(KEYS.deployer), chain, transport: http(rpcUrl) });
const token = artifact("TestUSDC");
const hash = await deployer.deployContract({ abi: token.abi, bytecode: hex(token.bytecode), args: ["USDC", "2"] });
const asset = (await pub.waitForTransactionReceipt({ hash })).contractAddress;
const buyer = privateKeyToAccount(KEYS.buyer);
const mint = await deployer.writeContract({ address: asset, abi: token.abi, functionName: "mint", args: [buyer.address, AMOUNT * BigInt(N) * 10n] });
await pub.waitForTransactionReceipt({ hash: mint });
await pub.request({ method: "anvil_setCode", params: [MULTICALL3, hex(artifact("TestMulticall").deployedBytecode)] });

const now = Math.floor(Date.now() / 1000);
const block = await pub.getBlock();
const chainNow = Number(block.timestamp);
const requirements = {
  scheme: "exact",
  network: "eip155:84532",
  amount: AMOUNT.toString(),
  asset,
  payTo: PAY_TO,
  maxTimeoutSeconds: MAX_TIMEOUT,
  extra: { name: "USDC", version: "2" },
};
const types = {
  TransferWithAuthorization: [
    { name: "from", type: "address" },
    { name: "to", type: "address" },
    { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" },
    { name: "validBefore", type: "uint256" },
    { name: "nonce", type: "bytes32" },
  ],
};
const lines = [];
for (let i = 0; i < N; i++) {
  const nonce = hex(Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex"));
  const authorization = {
    from: buyer.address,
    to: PAY_TO,
    value: AMOUNT.toString(),
    validAfter: String(Math.min(now, chainNow) - 600),
    validBefore: String(Math.max(now, chainNow) + MAX_TIMEOUT - 30),
    nonce,
  };
  const signature = await buyer.signTypedData({
    domain: { name: "USDC", version: "2", chainId: 84532, verifyingContract: asset },
    types,
    primaryType: "TransferWithAuthorization",
    message: { ...authorization, value: AMOUNT, validAfter: BigInt(authorization.validAfter), validBefore: BigInt(authorization.validBefore) },
  });
  lines.push(JSON.stringify({
    x402Version: 2,
    paymentPayload: {
      x402Version: 2,
      resource: { url: "https://seller.example/bench", description: "bench", mimeType: "application/json" },
      accepted: requirements,
      payload: { signature, authorization },
    },
    paymentRequirements: requirements,
  }));
}
fs.writeFileSync(out, lines.join("\n") + "\n");
console.log(asset);
