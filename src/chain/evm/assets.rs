//! Known EIP-3009 tokens (spec §3.11): their EIP-712 domain values and decimals, plus default
//! public RPC endpoints. Operators extend the table per chain with `[[chains."<id>".assets]]`.

use alloy::primitives::{Address, address};

/// A token Gatehouse knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownAsset {
    /// Chain id.
    pub chain_id: u64,
    /// Token contract.
    pub address: Address,
    /// EIP-712 domain `name`.
    pub name: String,
    /// EIP-712 domain `version`.
    pub version: String,
    /// Decimals.
    pub decimals: u8,
}

/// The built-in table: USDC on Base and Base Sepolia. Note the names differ (`USD Coin` vs
/// `USDC`), a frequent integration bug (spec §3.11, issue #837).
pub fn builtin_assets() -> Vec<KnownAsset> {
    vec![
        KnownAsset {
            chain_id: 8453,
            address: address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
            name: "USD Coin".into(),
            version: "2".into(),
            decimals: 6,
        },
        KnownAsset {
            chain_id: 84532,
            address: address!("036CbD53842c5426634e7929541eC2318f3dCF7e"),
            name: "USDC".into(),
            version: "2".into(),
            decimals: 6,
        },
    ]
}

/// Decimals of a built-in token, if `asset` is one on `chain_id`.
pub fn asset_decimals(chain_id: u64, asset: Address) -> Option<u8> {
    builtin_assets()
        .into_iter()
        .find(|a| a.chain_id == chain_id && a.address == asset)
        .map(|a| a.decimals)
}

/// Public RPC endpoints used when a chain's config names none.
pub fn default_rpc_urls(chain_id: u64) -> &'static [&'static str] {
    match chain_id {
        8453 => &["https://mainnet.base.org"],
        84532 => &["https://sepolia.base.org"],
        _ => &[],
    }
}

/// Whether Multicall3 is known to be deployed on `chain_id` (used when the config is silent).
pub fn has_multicall3(chain_id: u64) -> bool {
    matches!(chain_id, 8453 | 84532)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_usdc_has_six_decimals_and_others_are_unknown() {
        let base = address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
        assert_eq!(asset_decimals(8453, base), Some(6));
        assert_eq!(asset_decimals(84532, base), None);
        assert_eq!(asset_decimals(8453, Address::ZERO), None);
    }
}
