"""Buyer using the Python `x402` client over httpx (its x402AsyncTransport, which is what
x402HttpxClient installs, wrapped around a recording transport).

Env: SELLER_URL, BUYER_PRIVATE_KEY, ASSET, AMOUNT, MODE=pay|replay. Prints `RESULT {json}` in the same shape as
the JS buyers: status, decoded settle response, the refusal reason the SDK parsed, and in replay
mode the outcome of re-sending the identical paid request (a retry after a lost response).
"""

import asyncio
import json
import os

import httpx
from eth_account import Account
from x402 import x402Client
from x402.http import x402HTTPClient
from x402.http.clients.httpx import x402AsyncTransport
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.exact import register_exact_evm_client

PAYMENT_HEADERS = ("payment-signature", "x-payment")


class RecordingTransport(httpx.AsyncHTTPTransport):
    """Remembers the last request that carried a payment header, for the replay scenario."""

    def __init__(self) -> None:
        super().__init__()
        self.paid: dict | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if any(h in request.headers for h in PAYMENT_HEADERS):
            self.paid = {"url": str(request.url), "method": request.method, "headers": dict(request.headers)}
        return await super().handle_async_request(request)


def describe(http: x402HTTPClient, res: httpx.Response) -> dict:
    try:
        body = res.json()
    except ValueError:
        body = res.text
    settle = None
    if res.headers.get("PAYMENT-RESPONSE") or res.headers.get("X-PAYMENT-RESPONSE"):
        try:
            settle = http.get_payment_settle_response(res.headers.get).model_dump(by_alias=True, exclude_none=True)
        except Exception as e:  # noqa: BLE001 - reported to the harness verbatim
            settle = {"decodeError": str(e)}
    reason = None
    if res.status_code == 402:
        try:
            reason = http.get_payment_required_response(res.headers.get, body).error
        except Exception as e:  # noqa: BLE001
            reason = f"unparseable 402: {e}"
        # A 402 after a failed settle carries its reason in the decoded PAYMENT-RESPONSE instead.
        if (not reason or reason.startswith("unparseable")) and settle and settle.get("errorReason"):
            reason = settle["errorReason"]
    return {"status": res.status_code, "settle": settle, "reason": reason, "body": body}


async def main() -> None:
    url = os.environ["SELLER_URL"]
    mode = os.environ.get("MODE", "pay")
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(Account.from_key(os.environ["BUYER_PRIVATE_KEY"])))
    # The test token is not a default asset of the SDK: opt it in, capped at the harness price.
    client.set_spend_controls(
        {
            "allowed_assets": [
                {"network": n, "asset": os.environ["ASSET"], "max_amount_per_payment": os.environ["AMOUNT"]}
                for n in ("eip155:84532", "base-sepolia")
            ]
        }
    )
    http = x402HTTPClient(client)
    rec = RecordingTransport()
    out: dict = {"buyer": "x402 (python, httpx)"}
    try:
        async with httpx.AsyncClient(transport=x402AsyncTransport(client, rec), timeout=90) as c:
            res = await c.get(url)
            await res.aread()
            out.update(describe(http, res))
        if mode == "replay" and rec.paid:
            async with httpx.AsyncClient(timeout=60) as plain:
                r2 = await plain.request(rec.paid["method"], rec.paid["url"], headers=rec.paid["headers"])
                out["replay"] = describe(http, r2)
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}"
    print("RESULT " + json.dumps(out, default=str), flush=True)


asyncio.run(main())
