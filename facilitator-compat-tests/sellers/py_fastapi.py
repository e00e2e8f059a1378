"""Seller using the Python `x402` package's FastAPI middleware (v2) with FACILITATOR_URL as its
facilitator; the route is priced in atomic units of the deployed test token.

Env: FACILITATOR_URL, PORT, PAY_TO, ASSET, TOKEN_NAME, TOKEN_VERSION, AMOUNT.
"""

import os

import uvicorn
from fastapi import FastAPI
from x402 import x402ResourceServer
from x402.http import FacilitatorConfig, HTTPFacilitatorClient
from x402.http.middleware.fastapi import payment_middleware
from x402.http.types import PaymentOption, RouteConfig
from x402.mechanisms.evm.exact import register_exact_evm_server

e = os.environ
server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=e["FACILITATOR_URL"])))
register_exact_evm_server(server, "eip155:84532")

routes = {
    "GET /paid": RouteConfig(
        accepts=PaymentOption(
            scheme="exact",
            pay_to=e["PAY_TO"],
            price={
                "amount": e["AMOUNT"],
                "asset": e["ASSET"],
                "extra": {"name": e["TOKEN_NAME"], "version": e["TOKEN_VERSION"]},
            },
            network="eip155:84532",
            max_timeout_seconds=120,
        ),
        description="compat test resource",
        mime_type="application/json",
    )
}

app = FastAPI()
_mw = payment_middleware(routes, server)


@app.middleware("http")
async def x402_mw(request, call_next):
    return await _mw(request, call_next)


@app.get("/paid")
async def paid():
    return {"content": "paid content py"}


@app.get("/health")
async def health():
    return {"ok": True}


if __name__ == "__main__":
    port = int(e.get("PORT", "0"))
    print(f"Seller listening on {port}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
