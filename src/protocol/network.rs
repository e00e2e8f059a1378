//! Network identifiers: CAIP-2 ids and the legacy v1 names that map onto them (spec §2.7).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Solana mainnet CAIP-2 id.
pub const SOLANA_MAINNET: &str = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp";
/// Solana devnet CAIP-2 id.
pub const SOLANA_DEVNET: &str = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1";
/// Solana testnet CAIP-2 id.
pub const SOLANA_TESTNET: &str = "solana:4uhcVJyU9pJkvQyS88uRDiswHXSCkY3z";

/// v1 network names and their CAIP-2 ids (spec §2.7).
pub const V1_NETWORKS: &[(&str, &str)] = &[
    ("base", "eip155:8453"),
    ("base-sepolia", "eip155:84532"),
    ("avalanche", "eip155:43114"),
    ("avalanche-fuji", "eip155:43113"),
    ("polygon", "eip155:137"),
    ("polygon-amoy", "eip155:80002"),
    ("sei", "eip155:1329"),
    ("sei-testnet", "eip155:1328"),
    ("iotex", "eip155:4689"),
    ("abstract", "eip155:2741"),
    ("abstract-testnet", "eip155:11124"),
    ("peaq", "eip155:3338"),
    ("story", "eip155:1514"),
    ("educhain", "eip155:41923"),
    ("skale-base-sepolia", "eip155:324705682"),
    ("ethereum", "eip155:1"),
    ("sepolia", "eip155:11155111"),
    ("megaeth", "eip155:4326"),
    ("monad", "eip155:143"),
    ("stable", "eip155:988"),
    ("stable-testnet", "eip155:2201"),
    ("solana", SOLANA_MAINNET),
    ("solana-devnet", SOLANA_DEVNET),
    ("solana-testnet", SOLANA_TESTNET),
];

/// A validated CAIP-2 chain id such as `eip155:8453`.
///
/// ```
/// use gatehouse::protocol::network::Caip2;
/// let id: Caip2 = "eip155:84532".parse().unwrap();
/// assert_eq!(id.namespace(), "eip155");
/// assert!("eip155".parse::<Caip2>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Caip2(String);

/// A string that is not a CAIP-2 id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a CAIP-2 chain id (namespace:reference)")]
pub struct InvalidCaip2(pub String);

impl Caip2 {
    /// The namespace, e.g. `eip155` or `solana`.
    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map(|(n, _)| n).unwrap_or("")
    }
    /// The reference, e.g. `8453`.
    pub fn reference(&self) -> &str {
        self.0.split_once(':').map(|(_, r)| r).unwrap_or("")
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Caip2 {
    type Err = InvalidCaip2;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((ns, reference)) = s.split_once(':') else {
            return Err(InvalidCaip2(s.to_owned()));
        };
        let ns_ok = (3..=8).contains(&ns.len())
            && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let ref_ok = (1..=32).contains(&reference.len())
            && reference
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ns_ok && ref_ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidCaip2(s.to_owned()))
        }
    }
}

impl TryFrom<String> for Caip2 {
    type Error = InvalidCaip2;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Caip2> for String {
    fn from(c: Caip2) -> String {
        c.0
    }
}

impl fmt::Display for Caip2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The chain family a network belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainFamily {
    /// `eip155:*`.
    Evm,
    /// `solana:*`.
    Svm,
    /// Anything else (passed through, never approved by our own chain checks).
    Other,
}

/// A network as named on the wire, resolved to CAIP-2.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Network {
    /// The CAIP-2 id.
    pub caip2: Caip2,
    /// The name exactly as the request carried it (a v1 name or the CAIP-2 id); echoed in
    /// settle responses.
    pub wire: String,
}

impl Network {
    /// Resolves a v1 name or a CAIP-2 id.
    pub fn resolve(wire: &str) -> Result<Self, InvalidCaip2> {
        let caip2 = match V1_NETWORKS.iter().find(|(name, _)| *name == wire) {
            Some((_, id)) => id.parse()?,
            None => wire.parse()?,
        };
        Ok(Self {
            caip2,
            wire: wire.to_owned(),
        })
    }

    /// The chain family.
    pub fn family(&self) -> ChainFamily {
        match self.caip2.namespace() {
            "eip155" => ChainFamily::Evm,
            "solana" => ChainFamily::Svm,
            _ => ChainFamily::Other,
        }
    }

    /// The EVM chain id for `eip155:<decimal>` networks.
    pub fn evm_chain_id(&self) -> Option<u64> {
        if self.family() != ChainFamily::Evm {
            return None;
        }
        self.caip2.reference().parse().ok()
    }

    /// The v1 name for this network, if it has one.
    pub fn v1_name(&self) -> Option<&'static str> {
        V1_NETWORKS
            .iter()
            .find(|(_, id)| *id == self.caip2.as_str())
            .map(|(name, _)| *name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_names_and_caip2_resolve_to_the_same_network() {
        let a = Network::resolve("base-sepolia").unwrap();
        let b = Network::resolve("eip155:84532").unwrap();
        assert_eq!(a.caip2, b.caip2);
        assert_eq!(a.evm_chain_id(), Some(84532));
        assert_eq!(a.wire, "base-sepolia");
        assert_eq!(b.v1_name(), Some("base-sepolia"));
        assert_eq!(
            Network::resolve("solana-devnet").unwrap().family(),
            ChainFamily::Svm
        );
    }

    #[test]
    fn malformed_network_ids_are_rejected() {
        for bad in ["", "base-nowhere", "eip155:", ":1", "EIP155:1", "eip155:a b"] {
            assert!(Network::resolve(bad).is_err(), "{bad} accepted");
        }
    }
}
