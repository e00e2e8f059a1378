// Compatibility harness: drives the published x402 reference SDKs (sellers and buyers) against a
// local anvil chain, first straight at the reference facilitator (proving the harness itself),
// then — when GATEHOUSE_BIN is set — with Gatehouse between the sellers and that facilitator.
//
// For every compatible seller×buyer pair it checks three scenarios:
//   paid     200 + decodable (X-)PAYMENT-RESPONSE {success, tx hash}, tx mined, token moved,
//            and (through Gatehouse) evidence rows for the verify and the settle;
//   refused  an unfunded buyer gets a normal 402 whose reason the SDK parses, no token moves,
//            and the upstream facilitator's /settle is never called;
//   replay   the identical paid request re-sent after a "lost" response does not pay twice.
//
// Prints one line per row and finally exactly `N passed, N failed`; exits non-zero on any
// failure; writes RESULTS.md. Every child listens on 127.0.0.1 and is killed on exit.

import { spawn, execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createPublicClient, createWalletClient, defineChain, http } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { getAddressDecoder, getAddressEncoder, getProgramDerivedAddress } from "@solana/kit";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..");
const RUN_DIR = path.join(HERE, ".run");
const PY = path.join(HERE, ".venv", "bin", "python");
// x402-secure signs with the legacy x402 1.x Python API, which x402 2.x removed: its own venv.
const PY_SECURE = path.join(HERE, ".venv-secure", "bin", "python");
const MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11";
const AMOUNT = 10_000n; // 0.01 of a 6-decimals token
const TOKEN_NAME = "USDC";
const TOKEN_VERSION = "2";

// anvil's default dev keys (public test mnemonic): #0 deploys/mints, #1 buys, #5 sells, #9 settles
// for the reference facilitator, #8 settles for Gatehouse's local settlement.
const KEYS = {
  deployer: "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  buyer: "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
  payTo: "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
  facilitator: "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
  localSigner: "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
};
const LOCAL_SIGNER_ENV = "GATEHOUSE_COMPAT_SIGNER_KEY";
// Gatehouse's per-request cap in the policy scenario: below the 10000 price, so every payment is
// refused by policy after the chain check and before anything is forwarded.
const POLICY_MAX_PER_REQUEST = "1";
// The risk path marks every seller's endpoint as requiring an agent trace (`require_trace` is
// keyed by host + path; the sellers all serve 127.0.0.1/paid), so a payment without a trace is
// denied by the default pack's `trace-required-missing`.
const RISK_REQUIRE_TRACE = "127.0.0.1/paid";

// ---------------------------------------------------------------------------------------------
// Process management: everything we start is tracked and killed on every exit path.

const children = new Set();
function killAll() {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
  children.clear();
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

function start(name, cmd, args, env = {}) {
  fs.mkdirSync(RUN_DIR, { recursive: true });
  const log = fs.openSync(path.join(RUN_DIR, `${name}.log`), "w");
  const child = spawn(cmd, args, { cwd: HERE, env: { ...process.env, ...env }, stdio: ["ignore", log, log] });
  child.name = name;
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

function stop(child) {
  if (!child) return;
  try {
    child.kill("SIGKILL");
  } catch {
    /* already gone */
  }
  children.delete(child);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitHttp(url, child, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`${child.name} exited (${child.exitCode}); see .run/${child.name}.log`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (r.status < 500) return;
    } catch {
      /* not up yet */
    }
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${url}${child ? ` (${child.name}; see .run/${child.name}.log)` : ""}`);
}

async function waitRpc(url, child, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`anvil exited (${child.exitCode}); see .run/anvil.log`);
    try {
      const r = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] }),
        signal: AbortSignal.timeout(2000),
      });
      if (r.ok) return;
    } catch {
      /* not up yet */
    }
    await sleep(200);
  }
  throw new Error("timed out waiting for anvil");
}

/** Runs a buyer to completion (bounded) and returns its RESULT json. */
function runBuyer(buyer, env, timeoutMs = 120_000) {
  return new Promise((resolve) => {
    const [cmd, args] = buyer.cmd();
    const child = spawn(cmd, args, { cwd: HERE, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      children.delete(child);
      const line = out.split("\n").find((l) => l.startsWith("RESULT "));
      if (!line) return resolve({ error: `buyer exited ${code} without RESULT: ${(err || out).slice(-800)}` });
      try {
        resolve(JSON.parse(line.slice(7)));
      } catch (e) {
        resolve({ error: `bad RESULT json: ${e.message}` });
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Chain setup.

function locateAnvil() {
  if (process.env.ANVIL_BIN) return process.env.ANVIL_BIN;
  const installer = path.join(REPO, "scripts", "install-anvil.sh");
  if (!fs.existsSync(installer)) throw new Error("set ANVIL_BIN or provide scripts/install-anvil.sh");
  const out = execFileSync("bash", [installer], { encoding: "utf8", timeout: 300_000, stdio: ["ignore", "pipe", "inherit"] });
  return out.trim().split("\n").pop();
}

function locateArtifact(name) {
  const dir = process.env.CONTRACTS_OUT || path.join(REPO, "contracts", "out");
  const p = path.join(dir, `${name}.json`);
  if (!fs.existsSync(p)) throw new Error(`missing contract artifact ${p} (set CONTRACTS_OUT)`);
  return JSON.parse(fs.readFileSync(p, "utf8"));
}

function hex(b) {
  return b.startsWith("0x") ? b : `0x${b}`;
}

async function setupChain(rpcUrl) {
  const chain = defineChain({
    id: 84532,
    name: "anvil",
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [rpcUrl] } },
  });
  const pub = createPublicClient({ chain, transport: http(rpcUrl) });
  const deployer = createWalletClient({ account: privateKeyToAccount(KEYS.deployer), chain, transport: http(rpcUrl) });
  const token = locateArtifact("TestUSDC");
  const hash = await deployer.deployContract({ abi: token.abi, bytecode: hex(token.bytecode), args: [TOKEN_NAME, TOKEN_VERSION] });
  const receipt = await pub.waitForTransactionReceipt({ hash, timeout: 30_000 });
  const asset = receipt.contractAddress;
  const buyer = privateKeyToAccount(KEYS.buyer).address;
  const mint = await deployer.writeContract({ address: asset, abi: token.abi, functionName: "mint", args: [buyer, 1_000_000_000n] });
  await pub.waitForTransactionReceipt({ hash: mint, timeout: 30_000 });
  // The reference facilitator diagnoses failed simulations through Multicall3, which a fresh
  // anvil lacks; install the project's aggregate3-compatible test multicall at that address.
  try {
    const mc = locateArtifact("TestMulticall");
    await pub.request({ method: "anvil_setCode", params: [MULTICALL3, hex(mc.deployedBytecode)] });
  } catch (e) {
    console.log(`note: no Multicall3 installed (${e.message})`);
  }
  const balanceOf = (address) => pub.readContract({ address: asset, abi: token.abi, functionName: "balanceOf", args: [address] });
  return { pub, asset, balanceOf };
}

// ---------------------------------------------------------------------------------------------
// SDK matrix.

const SELLERS = [
  { id: "v2-express", pkg: "@x402/express", versions: [2], cmd: () => ["node", ["sellers/v2-express.mjs"]] },
  { id: "v1-express", pkg: "x402-express", versions: [1], cmd: () => ["node", ["sellers/v1-express.mjs"]] },
  { id: "py-fastapi", pkg: "x402 (python, FastAPI)", versions: [2], cmd: () => [PY, ["sellers/py_fastapi.py"]] },
  // t54's x402-secure: its seller and buyer need a risk API (an "agent gateway"), so they run
  // only on the risk path, and only with each other (family "secure").
  { id: "py-secure", pkg: "x402-secure SellerClient (python)", family: "secure", versions: [1], cmd: () => [PY_SECURE, ["sellers/py_secure.py"]] },
  // Solana (family "svm"): only on the Solana path, against svm-test-node.
  { id: "v2-express-svm", pkg: "@x402/express + @x402/svm", family: "svm", versions: [2], cmd: () => ["node", ["sellers/v2-express-svm.mjs"]] },
];
const BUYERS = [
  { id: "v2-fetch", pkg: "@x402/fetch", versions: [1, 2], cmd: () => ["node", ["buyers/v2-fetch.mjs"]] },
  { id: "v1-fetch", pkg: "x402-fetch", versions: [1], cmd: () => ["node", ["buyers/v1-fetch.mjs"]] },
  { id: "py-httpx", pkg: "x402 (python, httpx)", versions: [1, 2], cmd: () => [PY, ["buyers/py_httpx.py"]] },
  { id: "py-secure", pkg: "x402-secure BuyerClient (python)", family: "secure", versions: [1], cmd: () => [PY_SECURE, ["buyers/py_secure.py"]] },
  { id: "v2-fetch-svm", pkg: "@x402/fetch + @x402/svm", family: "svm", versions: [2], cmd: () => ["node", ["buyers/v2-fetch-svm.mjs"]] },
];

const family = (x) => x.family || "plain";
/** Whether a seller and a buyer can trade: same family and a common x402 version. */
function compatible(seller, buyer) {
  return family(seller) === family(buyer) && seller.versions.some((v) => buyer.versions.includes(v));
}

// ---------------------------------------------------------------------------------------------
// Evidence (Gatehouse's SQLite `evidence` table), read with python3's sqlite3.

/** A retried identical payment may be answered 200 (idempotent replay of the same settlement) or
 * 402; it must never produce a second, different settlement, and the upstream settles once. */
function checkReplay(res, s, settles, detail, fails) {
  const r2 = res.replay;
  if (!r2) fails.push("no replay was made");
  else {
    detail.replay = `${r2.status}${r2.reason ? ` ${r2.reason}` : ""}`;
    if (r2.status === 200) {
      if (!r2.settle || r2.settle.transaction !== s?.transaction)
        fails.push(`replay answered 200 with a different settlement: ${JSON.stringify(r2.settle)}`);
    } else if (r2.status !== 402) fails.push(`replay answered ${r2.status}`);
  }
  const ok = settles.filter((c) => c.result && c.result.success === true);
  if (ok.length > 1) fails.push(`upstream settled ${ok.length} times`);
}

/** Gatehouse recorded evidence for the paid request's verify and settle; returns the records. */
function checkPaidEvidence(gatehouseDb, evBefore, detail, fails) {
  const ev = evidenceSince(gatehouseDb, evBefore);
  detail.evidence = ev.map((e) => `${e.kind}:${e.decision}`).join(",");
  if (!ev.some((e) => /verify/i.test(e.kind))) fails.push(`no verify evidence (got ${detail.evidence || "none"})`);
  if (!ev.some((e) => /settle/i.test(e.kind))) fails.push(`no settle evidence (got ${detail.evidence || "none"})`);
  return ev;
}

function evidenceSince(dbPath, seq) {
  const code = `
import json, sqlite3, sys
con = sqlite3.connect(sys.argv[1])
rows = con.execute("select seq, kind, decision, fingerprint, body from evidence where seq > ? order by seq", (int(sys.argv[2]),)).fetchall()
print(json.dumps([[r[0], str(r[1]), str(r[2]), str(r[3]), str(r[4])] for r in rows]))
`;
  const out = execFileSync("python3", ["-c", code, dbPath, String(seq)], { encoding: "utf8", timeout: 20_000 });
  return JSON.parse(out).map(([s, kind, decision, fingerprint, body]) => ({ seq: s, kind, decision, fingerprint, body }));
}

/** The risk part of an evidence record's body (`{context, assessment, ...}`), or null. */
function riskOf(ev) {
  try {
    return JSON.parse(ev.body).risk || null;
  } catch {
    return null;
  }
}

/** Whether an evidence record shows the enforce rule `id` fired. */
function ruleFired(ev, id) {
  const contributions = riskOf(ev)?.assessment?.contributions || [];
  return contributions.some((c) => c.rule === id && c.fired === true && c.mode === "enforce");
}

function maxEvidenceSeq(dbPath) {
  const rows = evidenceSince(dbPath, -1);
  return rows.length ? rows[rows.length - 1].seq : 0;
}

// ---------------------------------------------------------------------------------------------
// Scenario checks. Each returns a list of failure strings (empty = pass).

const TX = /^0x[0-9a-fA-F]{64}$/;
const ALL = ["paid", "refused", "replay"];

async function upstreamCalls(refUrl) {
  const r = await fetch(`${refUrl}/__calls`, { signal: AbortSignal.timeout(5000) });
  return r.json();
}

/** The x402 version a seller×buyer pair speaks: the highest both support. */
function protocolVersion(seller, buyer) {
  return Math.max(...seller.versions.filter((v) => buyer.versions.includes(v)));
}

async function scenario(kind, ctx, seller, buyer) {
  const { chain, refUrl, sellerUrl, gatehouseDb, gatehouseUrl, localSigner } = ctx;
  // anvil mines only on transactions, and a simulation sees the latest block's timestamp: after a
  // stretch of scenarios that mine nothing it lags the wall clock by minutes, which fails an
  // authorization whose validAfter is only a minute old (x402 1.x Python signs now - 60). A real
  // chain mines every few seconds; mine an empty block so the chain's clock is current.
  await chain.pub.request({ method: "evm_mine", params: [] });
  const fails = [];
  const buyerKey = kind === "refused" ? generatePrivateKey() : KEYS.buyer;
  const buyerAddr = privateKeyToAccount(buyerKey).address;
  const payTo = privateKeyToAccount(KEYS.payTo).address;
  const before = { buyer: await chain.balanceOf(buyerAddr), payTo: await chain.balanceOf(payTo) };
  const callsBefore = (await upstreamCalls(refUrl)).length;
  const evBefore = gatehouseDb ? maxEvidenceSeq(gatehouseDb) : 0;
  // With local settlement the only on-chain settler is Gatehouse's own key: its nonce counts the
  // settlement transactions it sent.
  const signerNonce = () => chain.pub.getTransactionCount({ address: localSigner, blockTag: "latest" });
  const nonceBefore = localSigner ? await signerNonce() : 0;

  const res = await runBuyer(buyer, {
    SELLER_URL: `${sellerUrl}/paid`,
    BUYER_PRIVATE_KEY: buyerKey,
    ASSET: chain.asset,
    AMOUNT: String(AMOUNT),
    MODE: kind === "replay" || kind === "risk" ? kind : "pay",
    // x402-secure's buyer talks to Gatehouse's risk API itself and names the payee in its trace.
    GATEHOUSE_URL: gatehouseUrl || "",
    PAY_TO: payTo,
  });
  await sleep(300);
  const after = { buyer: await chain.balanceOf(buyerAddr), payTo: await chain.balanceOf(payTo) };
  const newCalls = (await upstreamCalls(refUrl)).slice(callsBefore);
  const settles = newCalls.filter((c) => c.endpoint === "settle");
  const detail = {};
  if (res.error) fails.push(`buyer error: ${res.error}`);
  const sent = localSigner ? (await signerNonce()) - nonceBefore : 0;
  if (localSigner) {
    const want = kind === "paid" || kind === "replay" ? 1 : 0;
    if (sent !== want) fails.push(`Gatehouse's local signer sent ${sent} transactions, want ${want}`);
    if (newCalls.length) fails.push(`the reference facilitator was called ${newCalls.length}x with local settlement`);
  }

  if (kind === "paid" || kind === "replay") {
    if (res.status !== 200) fails.push(`status ${res.status} (reason ${res.reason ?? "-"})`);
    const s = res.settle;
    if (!s || s.success !== true) fails.push(`settle response not success: ${JSON.stringify(s)}`);
    else if (!TX.test(String(s.transaction))) fails.push(`no tx hash: ${s.transaction}`);
    else {
      detail.tx = s.transaction;
      const rc = await chain.pub.getTransactionReceipt({ hash: s.transaction }).catch(() => null);
      if (!rc || rc.status !== "success") fails.push(`tx ${s.transaction} not mined successfully`);
      else if (localSigner && rc.from.toLowerCase() !== localSigner.toLowerCase())
        fails.push(`tx ${s.transaction} sent by ${rc.from}, not Gatehouse's local signer ${localSigner}`);
    }
    if (after.payTo - before.payTo !== AMOUNT) fails.push(`payTo moved ${after.payTo - before.payTo}, want ${AMOUNT}`);
    if (before.buyer - after.buyer !== AMOUNT) fails.push(`buyer moved ${before.buyer - after.buyer}, want ${AMOUNT}`);
    if (kind === "replay") checkReplay(res, s, settles, detail, fails);
    if (gatehouseDb) {
      const ev = checkPaidEvidence(gatehouseDb, evBefore, detail, fails);
      // x402-secure: Gatehouse scored the payment with the buyer's own session and trace.
      if (res.sid) {
        const scored = ev.filter((e) => /verify/i.test(e.kind)).map((e) => riskOf(e)?.context);
        if (!scored.some((c) => c?.session?.sid === res.sid && c?.trace?.tid === res.tid))
          fails.push(
            `no verify evidence scored the buyer's session ${res.sid} and trace ${res.tid} (scored: ${JSON.stringify(scored.map((c) => ({ sid: c?.session?.sid ?? null, tid: c?.trace?.tid ?? null })))})`,
          );
      }
    }
  } else {
    if (res.status !== 402) fails.push(`status ${res.status}, want 402`);
    if (typeof res.reason !== "string" || !res.reason || res.reason.startsWith("unparseable"))
      fails.push(`no SDK-parsed reason: ${JSON.stringify(res.reason)}`);
    detail.reason = res.reason;
    if (kind === "policy") {
      // v2 clients see Gatehouse's own code; the v1 wire has no policy codes, so a v1 exchange
      // carries the generic `invalid_payment`.
      const want = protocolVersion(seller, buyer) === 1 ? "invalid_payment" : "policy_max_per_request";
      if (res.reason !== want) fails.push(`reason ${JSON.stringify(res.reason)}, want ${want}`);
    }
    if (kind === "risk") {
      // Gatehouse's risk code on the v2 wire; the v1 wire has no risk codes.
      const want = protocolVersion(seller, buyer) === 1 ? "invalid_payment" : "risk_denied";
      if (res.reason !== want) fails.push(`reason ${JSON.stringify(res.reason)}, want ${want}`);
    }
    if (res.settle && res.settle.success) fails.push("refused payment reported success");
    if (after.payTo !== before.payTo || after.buyer !== before.buyer) fails.push("token balance moved");
    if (settles.length) fails.push(`upstream /settle was called ${settles.length}x`);
    if (gatehouseDb) {
      const ev = evidenceSince(gatehouseDb, evBefore);
      detail.evidence = ev.map((e) => `${e.kind}:${e.decision}`).join(",");
      if (!ev.length) fails.push("no evidence recorded for the refusal");
      // The refusal must be the risk rule's: the evidence shows it fired.
      const rule = kind === "risk" ? (family(buyer) === "secure" ? "tool-call-beneficiary-differs" : "trace-required-missing") : null;
      if (rule && !ev.some((e) => ruleFired(e, rule))) fails.push(`no evidence shows the rule ${rule} fired`);
    }
  }
  return { kind, fails, detail };
}

// ---------------------------------------------------------------------------------------------
// Solana: svm-test-node (LiteSVM with the real SPL Token and ATA programs behind JSON-RPC).

const SVM_NETWORK = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"; // devnet, the SDK's built-in id
const SVM_MINT = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"; // @x402/svm's devnet USDC
const SPL_TOKEN = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
const ATA_PROGRAM = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL";
const SIGNATURE = /^[1-9A-HJ-NP-Za-km-z]{64,88}$/;

/** A fresh ed25519 keypair: `bytes` is the 64-byte secret||public array solana-keygen writes. */
function svmKeypair() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync("ed25519");
  const seed = privateKey.export({ format: "der", type: "pkcs8" }).subarray(-32);
  const pub = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
  return { bytes: [...seed, ...pub], address: getAddressDecoder().decode(pub) };
}

async function svmAta(owner) {
  const enc = getAddressEncoder();
  const [pda] = await getProgramDerivedAddress({
    programAddress: ATA_PROGRAM,
    seeds: [enc.encode(owner), enc.encode(SPL_TOKEN), enc.encode(SVM_MINT)],
  });
  return pda;
}

/** svm-test-node's binary: SVM_NODE_BIN, else `<CARGO_TARGET_DIR or repo/target>/debug/`. */
function locateSvmNode() {
  if (process.env.SVM_NODE_BIN) return process.env.SVM_NODE_BIN;
  const target = process.env.CARGO_TARGET_DIR || path.join(REPO, "target");
  return path.join(target, "debug", "svm-test-node");
}

/** Starts svm-test-node (it exits when its stdin closes, so it never outlives the harness). */
async function startSvmNode(bin) {
  fs.mkdirSync(RUN_DIR, { recursive: true });
  const log = fs.openSync(path.join(RUN_DIR, "svm-test-node.log"), "w");
  const child = spawn(bin, [], { cwd: HERE, stdio: ["pipe", "pipe", log] });
  child.name = "svm-test-node";
  children.add(child);
  child.on("exit", () => children.delete(child));
  const port = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("svm-test-node printed no LISTENING line")), 30_000);
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`svm-test-node exited (${code}); see .run/svm-test-node.log`)));
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/LISTENING (\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
  const url = `http://127.0.0.1:${port}`;
  const rpc = async (method, params = []) => {
    const r = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
      signal: AbortSignal.timeout(10_000),
    });
    const j = await r.json();
    if (j.error) throw new Error(`${method}: ${JSON.stringify(j.error)}`);
    return j.result;
  };
  return { child, url, rpc };
}

/**
 * The Solana world: the mint, a funded buyer, a payee with an empty token account, and two
 * funded fee payers: the reference facilitator's, and the one whose keypair file (in `.run/`)
 * only Gatehouse's local settlement holds.
 */
async function setupSvm(node) {
  const { rpc } = node;
  await rpc("test_setMint", [SVM_MINT, SPL_TOKEN, 6, 1_000_000_000_000]);
  const buyer = svmKeypair();
  const payTo = svmKeypair();
  const refFeePayer = svmKeypair();
  const localFeePayer = svmKeypair();
  const setTokens = async (owner, amount) => rpc("test_setTokenAccount", [await svmAta(owner), SPL_TOKEN, SVM_MINT, owner, amount]);
  await setTokens(buyer.address, 1_000_000_000);
  await setTokens(payTo.address, 0);
  for (const k of [refFeePayer, localFeePayer]) await rpc("test_airdrop", [k.address, 10_000_000_000]);
  const keyFile = path.join(RUN_DIR, "svm-fee-payer.json");
  fs.writeFileSync(keyFile, JSON.stringify(localFeePayer.bytes), { mode: 0o600 });
  /** Token units held by `owner`'s associated token account (bytes 64..72 of its data). */
  const balance = async (owner) => {
    const info = await rpc("getAccountInfo", [await svmAta(owner), { encoding: "base64" }]);
    if (!info?.value) return 0n;
    return Buffer.from(info.value.data[0], "base64").readBigUInt64LE(64);
  };
  const lamports = async (owner) => BigInt((await rpc("getBalance", [owner])).value);
  return { ...node, buyer, payTo, refFeePayer, localFeePayer, keyFile, setTokens, balance, lamports };
}

/** The scenarios for Solana rows: as `scenario`, with the node's balances and send counter. */
async function svmScenario(kind, ctx, seller, buyer) {
  const { svm, sellerUrl, gatehouseDb, refUrl, localSigner } = ctx;
  // The settling fee payer: Gatehouse's own key with local settlement, else the upstream's.
  const feePayer = localSigner ? svm.localFeePayer : svm.refFeePayer;
  const fails = [];
  const detail = {};
  let payer = svm.buyer;
  if (kind === "refused") {
    // A buyer whose token account is empty: the transfer cannot succeed.
    payer = svmKeypair();
    await svm.setTokens(payer.address, 0);
  }
  const snap = async () => ({
    buyer: await svm.balance(payer.address),
    payTo: await svm.balance(svm.payTo.address),
    fees: await svm.lamports(feePayer.address),
    sends: await svm.rpc("test_sendCount"),
  });
  const before = await snap();
  const callsBefore = (await upstreamCalls(refUrl)).length;
  const evBefore = gatehouseDb ? maxEvidenceSeq(gatehouseDb) : 0;
  const res = await runBuyer(buyer, {
    SELLER_URL: `${sellerUrl}/paid`,
    BUYER_SVM_KEY: JSON.stringify(payer.bytes),
    SVM_RPC_URL: svm.url,
    NETWORK: SVM_NETWORK,
    ASSET: SVM_MINT,
    AMOUNT: String(AMOUNT),
    MODE: kind === "replay" ? "replay" : "pay",
  });
  await sleep(300);
  const after = await snap();
  const newCalls = (await upstreamCalls(refUrl)).slice(callsBefore);
  const settles = newCalls.filter((c) => c.endpoint === "settle");
  if (res.error) fails.push(`buyer error: ${res.error}`);
  // Only the settling facilitator sends transactions to the node (buyers only sign).
  const sent = after.sends - before.sends;
  const want = kind === "paid" || kind === "replay" ? 1 : 0;
  if (sent !== want) fails.push(`${sent} transactions were sent to the node, want ${want}`);
  if (localSigner && newCalls.length) fails.push(`the reference facilitator was called ${newCalls.length}x with local settlement`);
  if (kind === "paid" || kind === "replay") {
    if (res.status !== 200) fails.push(`status ${res.status} (reason ${res.reason ?? "-"})`);
    const s = res.settle;
    if (!s || s.success !== true) fails.push(`settle response not success: ${JSON.stringify(s)}`);
    else if (!SIGNATURE.test(String(s.transaction))) fails.push(`no transaction signature: ${s.transaction}`);
    else {
      detail.tx = s.transaction;
      const st = await svm.rpc("getSignatureStatuses", [[s.transaction], { searchTransactionHistory: true }]);
      const status = st?.value?.[0];
      if (!status || status.err !== null) fails.push(`transaction ${s.transaction} did not execute successfully: ${JSON.stringify(status)}`);
    }
    if (after.payTo - before.payTo !== AMOUNT) fails.push(`payTo moved ${after.payTo - before.payTo}, want ${AMOUNT}`);
    if (before.buyer - after.buyer !== AMOUNT) fails.push(`buyer moved ${before.buyer - after.buyer}, want ${AMOUNT}`);
    // The fee was paid by the settling fee payer, the co-signer of the one transaction.
    if (!(after.fees < before.fees)) fails.push(`the fee payer ${feePayer.address} paid no fee`);
    if (kind === "replay") checkReplay(res, s, settles, detail, fails);
    if (gatehouseDb) checkPaidEvidence(gatehouseDb, evBefore, detail, fails);
  } else {
    if (res.status !== 402) fails.push(`status ${res.status}, want 402`);
    if (typeof res.reason !== "string" || !res.reason || res.reason.startsWith("unparseable"))
      fails.push(`no SDK-parsed reason: ${JSON.stringify(res.reason)}`);
    detail.reason = res.reason;
    const want = { policy: "policy_max_per_request", risk: "risk_denied" }[kind];
    if (want && res.reason !== want) fails.push(`reason ${JSON.stringify(res.reason)}, want ${want}`);
    if (res.settle && res.settle.success) fails.push("refused payment reported success");
    if (after.payTo !== before.payTo || after.buyer !== before.buyer) fails.push("token balance moved");
    if (after.fees !== before.fees) fails.push(`the fee payer ${feePayer.address} spent lamports on a refused payment`);
    if (settles.length) fails.push(`upstream /settle was called ${settles.length}x`);
    if (gatehouseDb) {
      const ev = evidenceSince(gatehouseDb, evBefore);
      detail.evidence = ev.map((e) => `${e.kind}:${e.decision}`).join(",");
      if (!ev.length) fails.push("no evidence recorded for the refusal");
      if (kind === "risk" && !ev.some((e) => ruleFired(e, "trace-required-missing")))
        fails.push("no evidence shows the rule trace-required-missing fired");
    }
  }
  return { kind, fails, detail };
}

// ---------------------------------------------------------------------------------------------
// Orchestration.

async function startSeller(seller, facilitatorUrl, asset, extraEnv = {}) {
  const port = await freePort();
  const child = start(`seller-${seller.id}`, ...seller.cmd(), {
    FACILITATOR_URL: facilitatorUrl,
    PORT: String(port),
    PAY_TO: privateKeyToAccount(KEYS.payTo).address,
    ASSET: asset,
    TOKEN_NAME,
    TOKEN_VERSION,
    AMOUNT: String(AMOUNT),
    ...extraEnv,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitHttp(`${url}/health`, child, 60_000);
  return { child, url };
}

/**
 * Starts one Gatehouse instance named `name` (its files in .run/<name>/). `opts.local` switches
 * eip155:84532 to local settlement from KEYS.localSigner; `opts.policyMax` sets
 * `[policy.global] max_per_request`; `opts.risk` scores payments with the repository's default
 * risk pack (risk-rules/) and requires a trace on the sellers' endpoint; `opts.svm` ({url, keyFile})
 * adds Solana devnet on svm-test-node (with `opts.local`, settled from that fee-payer keypair).
 */
async function startGatehouse(name, bin, upstreamUrl, rpcUrl, asset, opts = {}) {
  const port = await freePort();
  const dir = path.join(RUN_DIR, name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const db = path.join(dir, "gatehouse.db");
  fs.writeFileSync(db, ""); // an empty file is a valid empty SQLite database
  const cfg = path.join(dir, "gatehouse.toml");
  fs.writeFileSync(
    cfg,
    [
      `listen = "127.0.0.1:${port}"`,
      `database_url = "sqlite://${db}"`,
      "[upstream]",
      `url = "${upstreamUrl}"`,
      '[chains."eip155:84532"]',
      `rpc_urls = ["${rpcUrl}"]`,
      ...(opts.local ? ['settlement = "local"', `signer_key_env = "${LOCAL_SIGNER_ENV}"`] : []),
      '[[chains."eip155:84532".assets]]',
      `address = "${asset}"`,
      `name = "${TOKEN_NAME}"`,
      `version = "${TOKEN_VERSION}"`,
      "decimals = 6",
      ...(opts.policyMax ? ["[policy.global]", `max_per_request = "${opts.policyMax}"`] : []),
      ...(opts.risk
        ? ["[risk]", `rules_dir = "${path.join(REPO, "risk-rules")}"`, "reload_secs = 0", `require_trace = ["${RISK_REQUIRE_TRACE}"]`]
        : []),
      // Solana devnet on svm-test-node: forwarded (the upstream's fee payer is learned from its
      // /supported), or settled locally from the fee-payer keypair file.
      ...(opts.svm ? [`[chains."${SVM_NETWORK}"]`, `rpc_urls = ["${opts.svm.url}"]`] : []),
      ...(opts.svm && opts.local ? ['settlement = "local"', `signer_key_file = "${opts.svm.keyFile}"`, "settle_receipt_timeout_secs = 20"] : []),
      "",
    ].join("\n"),
  );
  const env = { RUST_LOG: process.env.RUST_LOG || "info" };
  if (opts.local) env[LOCAL_SIGNER_ENV] = KEYS.localSigner;
  const child = start(name, bin, ["--config", cfg, "serve"], env);
  const url = `http://127.0.0.1:${port}`;
  await waitHttp(`${url}/health`, child, 60_000);
  return { child, url, db };
}

function versions() {
  const v = {};
  for (const p of ["@x402/core", "@x402/evm", "@x402/svm", "@x402/express", "@x402/fetch", "x402-express", "x402-fetch", "x402", "@solana/kit", "express", "viem"]) {
    try {
      v[p === "x402" ? "x402 (npm, legacy core of x402-express/x402-fetch)" : p] = JSON.parse(fs.readFileSync(path.join(HERE, "node_modules", p, "package.json"), "utf8")).version;
    } catch {
      v[p] = "?";
    }
  }
  const pyVersions = [
    [PY, "", ["x402", "fastapi", "httpx", "uvicorn"]],
    [PY_SECURE, ", .venv-secure", ["x402-secure", "x402", "opentelemetry-sdk", "fastapi", "httpx", "uvicorn"]],
  ];
  for (const [py, where, pkgs] of pyVersions) for (const p of pkgs) {
    try {
      v[`${p} (PyPI${where})`] = execFileSync(py, ["-c", `import importlib.metadata as m; print(m.version("${p}"))`], {
        encoding: "utf8",
        timeout: 20_000,
      }).trim();
    } catch {
      v[`${p} (PyPI${where})`] = "?";
    }
  }
  return v;
}

function writeResults(rows, vers, anvilVersion, gatehouseNote) {
  const mark = (sc) => (!sc ? "–" : sc.fails.length ? "FAIL" : "pass");
  const lines = [
    "# Facilitator compatibility results",
    "",
    "Generated by `facilitator-compat-tests/run.mjs` (do not edit by hand).",
    "",
    `Run: ${new Date().toISOString()}. Gatehouse: ${gatehouseNote}.`,
    "",
    "Scenarios: **paid** (200, decodable payment response with success and tx hash, tx mined, token moved,",
    "evidence for verify and settle when through Gatehouse); **refused** (unfunded buyer gets a 402 whose",
    "reason the SDK parses, nothing moves, upstream `/settle` never called); **replay** (the identical paid",
    "request re-sent after a lost response does not pay twice); **policy** (a funded buyer over Gatehouse's",
    "`max_per_request` gets a 402 whose SDK-parsed reason is `policy_max_per_request`, or `invalid_payment`",
    "on the v1 wire; nothing moves, upstream `/settle` never called, evidence recorded); **risk** (a funded",
    "buyer refused by Gatehouse's default risk pack gets a 402 whose SDK-parsed reason is `risk_denied`, or",
    "`invalid_payment` on the v1 wire; nothing moves, upstream `/settle` never called, the evidence shows the",
    "rule fired: `trace-required-missing` for the unmodified SDKs, which send no trace, and",
    "`tool-call-beneficiary-differs` for x402-secure, whose trace names another payee).",
    "",
    "Paths: `direct` = sellers → reference facilitator; `gatehouse` = sellers → Gatehouse → reference",
    "facilitator; `gatehouse-local` = sellers → Gatehouse settling itself with `settlement = \"local\"` (its",
    "upstream URL is a closed port; its own signer must send exactly the one settlement transaction);",
    "`gatehouse-policy` = sellers → Gatehouse with the policy cap → reference facilitator; `gatehouse-risk` =",
    "sellers → Gatehouse with `[risk]` (the repository's risk-rules/, a trace required on the sellers'",
    "endpoint) → reference facilitator. x402-secure runs only there (it needs Gatehouse's risk API), its",
    "paid scenario also requiring verify evidence that names its risk session and trace.",
    "",
    "Solana rows (`@x402/svm`) run on every path against svm-test-node (LiteSVM with the real SPL Token",
    "programs behind JSON-RPC) on devnet's CAIP-2 id: the reference facilitator settles with its own fee",
    "payer (`direct`, and upstream of `gatehouse`, `gatehouse-policy`, `gatehouse-risk`), `gatehouse-local`",
    "settles with Gatehouse's (the `feePayer` its `/supported` offers). There the refused buyer holds an",
    "empty token account, and every scenario also counts the transactions sent to the node (1 for paid",
    "and replay, else 0) and checks that the settling fee payer paid the fee (and nothing when refused).",
    "",
    "| path | seller | buyer | paid | refused | replay | policy | risk | row |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    if (r.skipped) {
      lines.push(`| ${r.mode} | ${r.seller.pkg} | ${r.buyer.pkg} | – | – | – | – | – | ${r.skipped} |`);
      continue;
    }
    const marks = ["paid", "refused", "replay", "policy", "risk"].map((k) => mark(r.scenarios.find((s) => s.kind === k)));
    lines.push(`| ${r.mode} | ${r.seller.pkg} | ${r.buyer.pkg} | ${marks.join(" | ")} | ${r.ok ? "PASS" : "FAIL"} |`);
  }
  const failures = rows.filter((r) => !r.skipped && !r.ok);
  if (failures.length) {
    lines.push("", "## Failures", "");
    for (const r of failures)
      for (const s of r.scenarios)
        if (s.fails.length) lines.push(`- ${r.mode} ${r.seller.id} × ${r.buyer.id} ${s.kind}: ${s.fails.join("; ")}`);
    if (failures.some((r) => family(r.buyer) === "secure"))
      lines.push(
        "",
        "x402-secure: Gatehouse does not read the trace id that x402-secure sends only inside `X-PAYMENT-SECURE`'s",
        "`ts` segment, so it scores the payment without the trace (README, \"Known incompatibility\").",
      );
  }
  lines.push("", "## Versions", "", "| package | version |", "|---|---|");
  for (const [k, v] of Object.entries(vers)) lines.push(`| ${k} | ${v} |`);
  lines.push(`| anvil | ${anvilVersion} |`, `| node | ${process.version} |`, "");
  lines.push(
    "Pairs not listed are incompatible by design: the legacy `x402-fetch` only reads the v1 JSON 402 body,",
    "so it cannot pay the v2 sellers. x402-secure's seller and buyer need an agent gateway's risk API",
    "(`/risk/session`, `/risk/trace`, `/x402/verify`, `/x402/settle`), so they run only on `gatehouse-risk`,",
    "and only with each other.",
    "",
  );
  fs.writeFileSync(path.join(HERE, "RESULTS.md"), lines.join("\n"));
}

/** Runs every compatible pair of the families in `kindsByFamily` ({family: scenario kinds}). */
async function runMode(mode, facilitatorUrl, ctxBase, rows, filter, kindsByFamily) {
  for (const seller of SELLERS) {
    const kinds = kindsByFamily[family(seller)];
    if (!kinds) continue;
    const pairs = BUYERS.filter((b) => compatible(seller, b) && filter(seller, b));
    if (!pairs.length) continue;
    let s;
    try {
      if (family(seller) === "svm" && !ctxBase.svm) throw new Error(`svm-test-node unavailable: ${ctxBase.svmError}`);
      const sellerEnv = family(seller) === "svm" ? { PAY_TO: ctxBase.svm.payTo.address, ASSET: SVM_MINT, NETWORK: SVM_NETWORK } : {};
      s = await startSeller(seller, facilitatorUrl, ctxBase.chain.asset, sellerEnv);
    } catch (e) {
      for (const buyer of pairs) {
        const row = { mode, seller, buyer, ok: false, scenarios: [{ kind: "paid", fails: [`seller failed to start: ${e.message}`], detail: {} }] };
        rows.push(row);
        console.log(`FAIL ${mode} ${seller.id} × ${buyer.id}: seller failed to start: ${e.message}`);
      }
      continue;
    }
    for (const buyer of pairs) {
      const ctx = { ...ctxBase, sellerUrl: s.url };
      const scenarios = [];
      for (const kind of kinds) {
        try {
          scenarios.push(await (family(seller) === "svm" ? svmScenario : scenario)(kind, ctx, seller, buyer));
        } catch (e) {
          scenarios.push({ kind, fails: [`harness error: ${e.message}`], detail: {} });
        }
      }
      const ok = scenarios.every((x) => !x.fails.length);
      rows.push({ mode, seller, buyer, ok, scenarios });
      const summary = scenarios
        .map((x) => `${x.kind}=${x.fails.length ? "FAIL" : "ok"}${x.detail.reason ? `(${x.detail.reason})` : ""}${x.detail.replay ? `(replay ${x.detail.replay})` : ""}`)
        .join(" ");
      console.log(`${ok ? "PASS" : "FAIL"} ${mode} ${seller.id} × ${buyer.id}: ${summary}`);
      for (const x of scenarios) for (const f of x.fails) console.log(`    ${x.kind}: ${f}`);
    }
    stop(s.child);
  }
}

async function main() {
  const only = process.env.ONLY ? new RegExp(process.env.ONLY) : null;
  const filter = (s, b) => !only || only.test(`${s.id}:${b.id}`);
  fs.mkdirSync(RUN_DIR, { recursive: true });

  const anvilBin = locateAnvil();
  const anvilVersion = execFileSync(anvilBin, ["--version"], { encoding: "utf8", timeout: 20_000 }).split("\n")[0].trim();
  const anvilPort = await freePort();
  const rpcUrl = `http://127.0.0.1:${anvilPort}`;
  const anvil = start("anvil", anvilBin, ["--host", "127.0.0.1", "--port", String(anvilPort), "--chain-id", "84532", "--silent"]);
  await waitRpc(rpcUrl, anvil);
  const chain = await setupChain(rpcUrl);
  console.log(`anvil ${rpcUrl}, token ${chain.asset}`);

  // Solana: one svm-test-node for every path (the Solana rows fail, saying why, without it).
  let svm = null;
  let svmError = null;
  try {
    const svmBin = locateSvmNode();
    if (!fs.existsSync(svmBin)) throw new Error(`no binary at ${svmBin} (build it: see README, or set SVM_NODE_BIN)`);
    svm = await setupSvm(await startSvmNode(svmBin));
    console.log(`svm-test-node ${svm.url}, mint ${SVM_MINT}`);
  } catch (e) {
    svmError = e.message;
    console.log(`note: no Solana rows can pass: ${svmError}`);
  }

  const refPort = await freePort();
  const ref = start("reference-facilitator", "node", ["reference-facilitator.mjs"], {
    RPC_URL: rpcUrl,
    FACILITATOR_PRIVATE_KEY: KEYS.facilitator,
    PORT: String(refPort),
    ...(svm ? { SVM_RPC_URL: svm.url, SVM_FACILITATOR_KEY: JSON.stringify(svm.refFeePayer.bytes) } : {}),
  });
  const refUrl = `http://127.0.0.1:${refPort}`;
  await waitHttp(`${refUrl}/supported`, ref, 60_000);

  const rows = [];
  await runMode("direct", refUrl, { chain, refUrl, gatehouseDb: null, svm, svmError }, rows, filter, { plain: ALL, svm: ALL });

  let gatehouseNote;
  const bin = process.env.GATEHOUSE_BIN;
  // Each Gatehouse path: its mode name, its instance options, the scenarios it runs.
  const closedPort = await freePort(); // nothing listens here: the local path has no upstream
  const paths = [
    { mode: "gatehouse", upstream: refUrl, opts: {}, kinds: { plain: ALL, svm: ALL } },
    { mode: "gatehouse-local", upstream: `http://127.0.0.1:${closedPort}`, opts: { local: true }, kinds: { plain: ALL, svm: ALL } },
    { mode: "gatehouse-policy", upstream: refUrl, opts: { policyMax: POLICY_MAX_PER_REQUEST }, kinds: { plain: ["policy"], svm: ["policy"] } },
    // The default risk pack with traces required: the unmodified SDKs (no trace) are refused;
    // x402-secure (session + trace) pays, and is refused when its trace shows tampering.
    { mode: "gatehouse-risk", upstream: refUrl, opts: { risk: true }, kinds: { plain: ["risk"], secure: [...ALL, "risk"], svm: ["risk"] } },
  ];
  if (bin) {
    gatehouseNote = `\`${path.basename(bin)}\`; \`gatehouse\` forwards to the reference facilitator, \`gatehouse-local\` settles itself (no upstream), \`gatehouse-policy\` forwards with \`max_per_request = "${POLICY_MAX_PER_REQUEST}"\`, \`gatehouse-risk\` forwards with the default risk pack and \`require_trace = ["${RISK_REQUIRE_TRACE}"]\``;
    const localSigner = privateKeyToAccount(KEYS.localSigner).address;
    for (const p of paths) {
      const wanted = SELLERS.some((s) => p.kinds[family(s)] && BUYERS.some((b) => compatible(s, b) && filter(s, b)));
      if (!wanted) continue;
      let gh = null;
      try {
        if (svm) p.opts.svm = { url: svm.url, keyFile: svm.keyFile };
        gh = await startGatehouse(p.mode, bin, p.upstream, rpcUrl, chain.asset, p.opts);
      } catch (e) {
        console.log(`FAIL ${p.mode} did not start: ${e.message}`);
        rows.push({ mode: p.mode, seller: { id: "-", pkg: "-" }, buyer: { id: "-", pkg: "-" }, ok: false, scenarios: [{ kind: Object.values(p.kinds)[0][0], fails: [`${p.mode} did not start: ${e.message}`], detail: {} }] });
      }
      const ctx = {
        chain,
        refUrl,
        gatehouseDb: gh && gh.db,
        gatehouseUrl: gh && gh.url,
        localSigner: p.opts.local ? localSigner : null,
        svm,
        svmError,
      };
      if (gh) await runMode(p.mode, gh.url, ctx, rows, filter, p.kinds);
      stop(gh && gh.child);
    }
  } else {
    gatehouseNote = "not run (GATEHOUSE_BIN unset)";
    for (const p of paths)
      for (const seller of SELLERS)
        for (const buyer of BUYERS)
          if (p.kinds[family(seller)] && compatible(seller, buyer) && filter(seller, buyer))
            rows.push({ mode: p.mode, seller, buyer, skipped: "not run" });
  }

  writeResults(rows, versions(), anvilVersion, gatehouseNote);
  const ran = rows.filter((r) => !r.skipped);
  const passed = ran.filter((r) => r.ok).length;
  const failed = ran.length - passed;
  const skipped = rows.length - ran.length;
  if (skipped) console.log(`${skipped} Gatehouse rows not run (GATEHOUSE_BIN unset)`);
  console.log(`${passed} passed, ${failed} failed`);
  killAll();
  process.exit(failed || !ran.length ? 1 : 0);
}

const overall = setTimeout(() => {
  console.log("harness timed out after 20 minutes");
  console.log("0 passed, 1 failed");
  killAll();
  process.exit(1);
}, 20 * 60_000);
overall.unref();

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  console.log("0 passed, 1 failed");
  killAll();
  process.exit(1);
});
