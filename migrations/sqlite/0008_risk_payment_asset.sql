-- The asset of each approved payment, so an endpoint's usual amount range (risk context
-- `endpoint.usual_min` / `usual_max`) never mixes atomic units of tokens with different decimals.
ALTER TABLE risk_payments ADD COLUMN asset TEXT;
-- Covering indexes for the bounded history reads (src/store/risk.rs `risk_history`): every
-- count filters on the payment's own fingerprint too, so it is in each index, and the count
-- never reads the table.
DROP INDEX risk_payments_payer_idx;
CREATE INDEX risk_payments_payer_idx ON risk_payments (payer, created_at_ms, fingerprint);
CREATE INDEX risk_payments_payer_pay_to_idx ON risk_payments (payer, pay_to, fingerprint);
CREATE INDEX risk_payments_payer_resource_idx
    ON risk_payments (payer, resource, created_at_ms, fingerprint);
CREATE INDEX risk_payments_payer_endpoint_idx
    ON risk_payments (payer, endpoint, amount, fingerprint);
CREATE INDEX risk_payments_endpoint_asset_idx
    ON risk_payments (endpoint, asset, created_at_ms, amount, fingerprint);
