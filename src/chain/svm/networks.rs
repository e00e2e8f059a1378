//! Solana constants: networks, well-known programs, USDC mints and default endpoints
//! (spec §4.4).

use crate::protocol::network::{SOLANA_DEVNET, SOLANA_MAINNET, SOLANA_TESTNET};

/// SPL Token program.
pub const SPL_TOKEN_PROGRAM: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
/// Token-2022 program.
pub const TOKEN_2022_PROGRAM: &str = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb";
/// Associated Token Account program.
pub const ATA_PROGRAM: &str = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL";
/// Compute Budget program.
pub const COMPUTE_BUDGET_PROGRAM: &str = "ComputeBudget111111111111111111111111111111";
/// SPL Memo program (v2/v3, the one wallets and the reference client use).
pub const MEMO_PROGRAM: &str = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr";
/// Lighthouse (assertions injected by Phantom and Solflare, spec §4.3 step 15).
pub const LIGHTHOUSE_PROGRAM: &str = "L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95";

/// USDC on mainnet (6 decimals, SPL Token).
pub const USDC_MAINNET: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
/// USDC on devnet and testnet (6 decimals).
pub const USDC_DEVNET: &str = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU";

/// Default compute-unit price cap: 5 lamports/CU (spec §4.4).
pub const DEFAULT_MAX_COMPUTE_UNIT_PRICE_MICRO_LAMPORTS: u64 = 5_000_000;
/// Default compute-unit limit cap (the later spec's smart-wallet cap; the reference client
/// asks for 20 000).
pub const DEFAULT_MAX_COMPUTE_UNIT_LIMIT: u32 = 400_000;
/// Default maximum instruction count (TS v2: 3..=6; the later spec allows 7).
pub const DEFAULT_MAX_INSTRUCTIONS: usize = 6;

/// A well-known Solana network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownNetwork {
    /// CAIP-2 id.
    pub caip2: &'static str,
    /// The v1 name.
    pub v1_name: &'static str,
    /// The public RPC endpoint (rate-limited; configure your own for production).
    pub default_rpc: &'static str,
    /// Circle's USDC mint there.
    pub usdc_mint: &'static str,
}

/// Mainnet, devnet and testnet.
pub const KNOWN_NETWORKS: &[KnownNetwork] = &[
    KnownNetwork {
        caip2: SOLANA_MAINNET,
        v1_name: "solana",
        default_rpc: "https://api.mainnet-beta.solana.com",
        usdc_mint: USDC_MAINNET,
    },
    KnownNetwork {
        caip2: SOLANA_DEVNET,
        v1_name: "solana-devnet",
        default_rpc: "https://api.devnet.solana.com",
        usdc_mint: USDC_DEVNET,
    },
    KnownNetwork {
        caip2: SOLANA_TESTNET,
        v1_name: "solana-testnet",
        default_rpc: "https://api.testnet.solana.com",
        usdc_mint: USDC_DEVNET,
    },
];

/// Looks a network up by CAIP-2 id or v1 name.
pub fn known_network(id: &str) -> Option<&'static KnownNetwork> {
    KNOWN_NETWORKS
        .iter()
        .find(|n| n.caip2 == id || n.v1_name == id)
}

/// The USDC mint on a network, by CAIP-2 id or v1 name.
pub fn usdc_mint(id: &str) -> Option<&'static str> {
    known_network(id).map(|n| n.usdc_mint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_resolve_by_caip2_and_v1_name() {
        assert_eq!(usdc_mint("solana"), Some(USDC_MAINNET));
        assert_eq!(usdc_mint(SOLANA_MAINNET), Some(USDC_MAINNET));
        assert_eq!(usdc_mint("solana-devnet"), Some(USDC_DEVNET));
        assert_eq!(
            known_network("solana-testnet").map(|n| n.caip2),
            Some(SOLANA_TESTNET)
        );
        assert!(known_network("base").is_none());
    }
}
