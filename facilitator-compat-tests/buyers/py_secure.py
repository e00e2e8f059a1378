"""Buyer using t54's x402-secure `BuyerClient` (PyPI `x402-secure`, package `x402_secure_client`)
with Gatehouse as its "agent gateway": it creates a risk session (`POST /risk/session`), stores
an agent trace (`POST /risk/trace`), then pays the seller with X-PAYMENT (signed by the legacy
`x402` 1.x `exact` module the SDK imports) + X-RISK-SESSION + X-PAYMENT-SECURE (built from the
active OpenTelemetry span, which carries the trace id). Runs in .venv-secure.

The SDK's client is given an httpx transport that records the paid request and its response
headers (the SDK returns only the body), for the settlement header and the replay scenario.

Env: SELLER_URL, GATEHOUSE_URL, BUYER_PRIVATE_KEY, PAY_TO, MODE=pay|replay|risk.
  risk: the trace shows the agent's payment tool called with a beneficiary other than the
        seller's payTo, which Gatehouse's default rule `tool-call-beneficiary-differs` denies.
Prints `RESULT {json}` in the shape of the other buyers.
"""

import asyncio
import json
import os
from urllib.parse import urlsplit

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from x402.clients.base import decode_x_payment_response
from x402_secure_client import BuyerClient, BuyerConfig

# Any address that is not the seller's payTo.
OTHER_BENEFICIARY = "0x9999999999999999999999999999999999999999"


class RecordingTransport(httpx.AsyncHTTPTransport):
    """Remembers the last request carrying X-PAYMENT and the headers of its response."""

    def __init__(self) -> None:
        super().__init__()
        self.paid: dict | None = None
        self.response_headers: dict | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if "x-payment" in request.headers:
            self.paid = {"url": str(request.url), "method": request.method, "headers": dict(request.headers)}
            self.response_headers = dict(response.headers)
        return response


def describe(status: int, headers: dict, body) -> dict:
    settle = None
    header = {k.lower(): v for k, v in headers.items()}.get("x-payment-response")
    if header:
        try:
            settle = decode_x_payment_response(header)
        except Exception as e:  # noqa: BLE001 - reported to the harness verbatim
            settle = {"decodeError": str(e)}
    reason = None
    if status == 402:
        reason = body.get("error") if isinstance(body, dict) else f"unparseable 402: {body!r}"[:300]
    return {"status": status, "settle": settle, "reason": reason, "body": body}


def body_of(res: httpx.Response):
    try:
        return res.json()
    except ValueError:
        return res.text


async def main() -> None:
    url = os.environ["SELLER_URL"]
    mode = os.environ.get("MODE", "pay")
    parts = urlsplit(url)
    # X-PAYMENT-SECURE is built from the current span's traceparent: give OpenTelemetry a real
    # tracer provider (no exporter needed).
    trace.set_tracer_provider(TracerProvider())
    buyer = BuyerClient(
        BuyerConfig(
            seller_base_url=f"{parts.scheme}://{parts.netloc}",
            agent_gateway_url=os.environ["GATEHOUSE_URL"],
            network="base-sepolia",
            buyer_private_key=os.environ["BUYER_PRIVATE_KEY"],
        )
    )
    rec = RecordingTransport()
    buyer.http = httpx.AsyncClient(timeout=60.0, transport=rec)
    beneficiary = OTHER_BENEFICIARY if mode == "risk" else os.environ["PAY_TO"]
    task = f"Buy the compat test resource at {url}"
    out: dict = {"buyer": "x402-secure (python)"}
    try:
        session = await buyer.create_risk_session(app_id="gatehouse-compat")
        tid = await buyer.store_agent_trace(
            sid=session["sid"],
            task=task,
            params={"url": url},
            events=[
                {"type": "user_input", "content": task},
                {"type": "tool_call", "name": "x402_pay", "arguments": {"url": url, "pay_to": beneficiary}},
            ],
        )
        out["sid"], out["tid"] = session["sid"], tid
        try:
            body = await buyer.execute_paid_request(
                endpoint=parts.path, task=task, params={}, sid=session["sid"], tid=tid
            )
            out.update(describe(200, rec.response_headers or {}, body))
        except httpx.HTTPStatusError as err:
            # The SDK raises on a non-2xx answer to the paid request; its response is the 402.
            out.update(describe(err.response.status_code, dict(err.response.headers), body_of(err.response)))
        if mode == "replay" and rec.paid:
            async with httpx.AsyncClient(timeout=60) as plain:
                r2 = await plain.request(rec.paid["method"], rec.paid["url"], headers=rec.paid["headers"])
                out["replay"] = describe(r2.status_code, dict(r2.headers), body_of(r2))
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}"
    print("RESULT " + json.dumps(out, default=str), flush=True)


asyncio.run(main())
