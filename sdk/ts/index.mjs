// @ts-check
// Buyer SDK for Gatehouse risk scoring (plain ESM with JSDoc types; no build step).
//
// 1. `GatehouseRisk.createSession` creates a risk session (x402-secure's fields: agent_did,
//    wallet_address, app_id, device, agent_endpoint), optionally proving the wallet by signing
//    Gatehouse's nonce with a viem account (EIP-191 personal_sign).
// 2. `uploadTrace` stores the agent trace (x402-secure's `agent_trace`: task, parameters,
//    environment, model_config, session_context, events).
// 3. `riskExtension` is an @x402/core client extension that adds
//    `paymentPayload.extensions["gatehouse-risk"] = {info: {sid, tid, traceparent, ap2}}` to
//    every payment, so a seller that forwards no headers still passes the risk inputs to
//    Gatehouse unchanged. `wrapFetchWithRisk` does all three around @x402/fetch.

/** The payload extension's key. */
export const EXTENSION = "gatehouse-risk";

/**
 * @typedef {{ sid: string, tid?: string, traceparent?: string, ap2?: object }} RiskHandles
 * @typedef {{ address: string, signMessage: (args: { message: string }) => Promise<string> }} ProofAccount
 * @typedef {{
 *   agentDid: string,
 *   walletAddress?: string,
 *   appId?: string,
 *   device?: object | string,
 *   agentEndpoint?: string,
 *   account?: ProofAccount,
 *   budget?: { amount: string, asset: string },
 * }} SessionOptions
 */

/** The message a wallet signs to prove ownership (must match Gatehouse's). */
export function proofMessage(wallet, nonce) {
  return `Gatehouse risk session\nwallet: ${wallet}\nnonce: ${nonce}`;
}

/** A random W3C traceparent. */
export function newTraceparent() {
  const hex = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join("");
  return `00-${hex(16)}-${hex(8)}-01`;
}

/** An error answered by Gatehouse (`{error: {code, message, field}}`). */
export class GatehouseError extends Error {
  /** @param {number} status @param {any} body */
  constructor(status, body) {
    super(`gatehouse answered ${status}: ${JSON.stringify(body)}`);
    this.status = status;
    this.body = body;
  }
}

export class GatehouseRisk {
  /** @param {{ baseUrl: string, fetch?: typeof fetch, timeoutMs?: number }} options */
  constructor({ baseUrl, fetch: f = globalThis.fetch, timeoutMs = 15_000 }) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.fetch = f;
    this.timeoutMs = timeoutMs;
  }

  /** @param {string} path @param {object} [body] */
  async call(path, body) {
    const res = await this.fetch(`${this.baseUrl}${path}`, {
      method: body ? "POST" : "GET",
      headers: body ? { "content-type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    const text = await res.text();
    let json;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    if (res.status !== 200) throw new GatehouseError(res.status, json);
    return json;
  }

  /** `GET /risk/nonce` → the nonce string. */
  async nonce() {
    return (await this.call("/risk/nonce")).nonce;
  }

  /**
   * `POST /risk/session` → `{sid, expires_at, wallet_proven}`.
   * @param {SessionOptions} options
   */
  async createSession(options) {
    const wallet = options.walletAddress ?? options.account?.address;
    if (!wallet) throw new Error("walletAddress or account is required");
    /** @type {Record<string, unknown>} */
    const body = {
      agent_did: options.agentDid,
      wallet_address: wallet,
      app_id: options.appId ?? null,
      device: options.device ?? null,
      agent_endpoint: options.agentEndpoint ?? null,
    };
    if (options.budget) body.budget = options.budget;
    if (options.account) {
      const nonce = await this.nonce();
      const signature = await options.account.signMessage({ message: proofMessage(wallet.toLowerCase(), nonce) });
      body.wallet_proof = { nonce, signature };
    }
    return this.call("/risk/session", body);
  }

  /**
   * `POST /risk/trace` → the `tid`.
   * @param {string} sid @param {object} agentTrace
   */
  async uploadTrace(sid, agentTrace) {
    return (await this.call("/risk/trace", { sid, agent_trace: agentTrace })).tid;
  }

  /**
   * `POST /risk/evaluate` (a dry run: nothing is held).
   * @param {RiskHandles} handles @param {object} facilitatorBody
   */
  async evaluate(handles, facilitatorBody) {
    return this.call("/risk/evaluate", {
      sid: handles.sid,
      tid: handles.tid ?? null,
      trace_context: handles.traceparent ? { tp: handles.traceparent } : null,
      payment: { protocol: "x402:exact", payload: facilitatorBody },
    });
  }
}

/**
 * x402-secure's headers for a seller (or proxy) that forwards them.
 * @param {RiskHandles} handles
 */
export function riskHeaders(handles) {
  /** @type {Record<string, string>} */
  const h = { "X-RISK-SESSION": handles.sid };
  if (handles.tid) h["X-RISK-TRACE"] = handles.tid;
  if (handles.traceparent) h["X-PAYMENT-SECURE"] = `w3c.v1;tp=${handles.traceparent}`;
  return h;
}

/**
 * An @x402/core client extension adding `extensions["gatehouse-risk"]` to each payment payload.
 * `handles` may be a function, so a long-lived client can name the current session and trace.
 * @param {RiskHandles | (() => RiskHandles)} handles
 */
export function riskExtension(handles) {
  return {
    key: EXTENSION,
    /** @param {any} paymentPayload */
    enrichPaymentPayload: async (paymentPayload) => {
      const h = typeof handles === "function" ? handles() : handles;
      /** @type {Record<string, unknown>} */
      const info = { sid: h.sid };
      if (h.tid) info.tid = h.tid;
      if (h.traceparent) info.traceparent = h.traceparent;
      if (h.ap2) info.ap2 = h.ap2;
      return { ...paymentPayload, extensions: { ...(paymentPayload.extensions ?? {}), [EXTENSION]: { info } } };
    },
  };
}

/**
 * Creates the session, uploads the trace, registers the extension on `client`, and returns
 * @x402/fetch's paying fetch plus the handles.
 * @param {typeof fetch} baseFetch
 * @param {any} client an @x402/core `x402Client` with its schemes registered
 * @param {{ gatehouseUrl: string, session: SessionOptions, trace?: object, ap2?: object,
 *   wrapFetchWithPayment?: Function }} options  `wrapFetchWithPayment` defaults to @x402/fetch's
 *   (passed explicitly only where @x402/fetch resolves from another directory, as in tests)
 */
export async function wrapFetchWithRisk(baseFetch, client, options) {
  const wrap = options.wrapFetchWithPayment ?? (await import("@x402/fetch")).wrapFetchWithPayment;
  const risk = new GatehouseRisk({ baseUrl: options.gatehouseUrl });
  const session = await risk.createSession(options.session);
  /** @type {RiskHandles} */
  const handles = { sid: session.sid, traceparent: newTraceparent() };
  if (options.trace) handles.tid = await risk.uploadTrace(session.sid, options.trace);
  if (options.ap2) handles.ap2 = options.ap2;
  client.registerExtension(riskExtension(() => handles));
  return { fetch: wrap(baseFetch, client), handles, session, risk };
}
