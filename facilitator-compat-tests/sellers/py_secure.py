"""Seller using t54's x402-secure `SellerClient` (PyPI `x402-secure`, package
`x402_secure_client`) with FACILITATOR_URL as its "agent gateway": the SDK posts to
`{gateway}/x402/verify` and `{gateway}/x402/settle` (x402 v1 bodies) and forwards the buyer's
X-PAYMENT, Origin, X-PAYMENT-SECURE, X-RISK-SESSION and X-AP2-EVIDENCE headers.

x402-secure ships no HTTP middleware, so the 402/200 exchange around the SDK calls is written
here in the v1 wire shape its BuyerClient reads (a JSON 402 body with `accepts`, an
`X-PAYMENT-RESPONSE` header on success). Runs in .venv-secure.

Env: FACILITATOR_URL, PORT, PAY_TO, ASSET, TOKEN_NAME, TOKEN_VERSION, AMOUNT.
"""

import base64
import json
import os

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from x402_secure_client import SellerClient

e = os.environ
gateway = SellerClient(e["FACILITATOR_URL"])
app = FastAPI()


def requirements(request: Request) -> dict:
    return {
        "scheme": "exact",
        "network": "base-sepolia",
        "maxAmountRequired": e["AMOUNT"],
        "resource": str(request.url),
        "description": "compat test resource",
        "mimeType": "application/json",
        "payTo": e["PAY_TO"],
        "maxTimeoutSeconds": 120,
        "asset": e["ASSET"],
        "extra": {"name": e["TOKEN_NAME"], "version": e["TOKEN_VERSION"]},
    }


def refuse(request: Request, reason: str, settle: dict | None = None) -> JSONResponse:
    headers = {}
    if settle is not None:
        headers["X-PAYMENT-RESPONSE"] = base64.b64encode(json.dumps(settle).encode()).decode()
    body = {"x402Version": 1, "error": reason, "accepts": [requirements(request)]}
    return JSONResponse(body, status_code=402, headers=headers)


@app.get("/paid")
async def paid(request: Request):
    x_payment = request.headers.get("X-PAYMENT")
    if not x_payment:
        return refuse(request, "X-PAYMENT header is required")
    try:
        payload = json.loads(base64.b64decode(x_payment))
    except ValueError:
        return refuse(request, "invalid_payload")
    reqs = requirements(request)
    risk = {
        "x_payment_b64": x_payment,
        "origin": request.headers.get("Origin", ""),
        "x_payment_secure": request.headers.get("X-PAYMENT-SECURE", ""),
        "risk_sid": request.headers.get("X-RISK-SESSION", ""),
        "x_ap2_evd": request.headers.get("X-AP2-EVIDENCE"),
    }
    try:
        verdict = await gateway.verify(payload, reqs, **risk)
        if not verdict.get("isValid"):
            return refuse(request, verdict.get("invalidReason") or "verification failed")
        settled = await gateway.settle(payload, reqs, **risk)
    except httpx.HTTPStatusError as err:
        # The SDK raises on any non-2xx answer from the gateway; say which and why.
        return JSONResponse(
            {"error": f"gateway {err.response.status_code}: {err.response.text[:500]}"}, status_code=502
        )
    if not settled.get("success"):
        return refuse(request, settled.get("errorReason") or "settlement failed", settled)
    encoded = base64.b64encode(json.dumps(settled).encode()).decode()
    return JSONResponse({"content": "paid content secure"}, headers={"X-PAYMENT-RESPONSE": encoded})


@app.get("/health")
async def health():
    return {"ok": True}


if __name__ == "__main__":
    port = int(e.get("PORT", "0"))
    print(f"Seller listening on {port}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
