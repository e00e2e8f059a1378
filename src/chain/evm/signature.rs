//! EIP-3009 typed data and signature forms: the EIP-712 digest, strict EOA recovery (low-s,
//! v ∈ {27, 28} or {0, 1}) and ERC-6492 unwrapping. No I/O.

use alloy::primitives::{Address, B256, Bytes, Signature, U256, b256};
use alloy::sol_types::{Eip712Domain, SolStruct, SolValue};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use std::borrow::Cow;
use std::sync::LazyLock;

use super::abi::TransferWithAuthorization;

/// The 32-byte suffix that marks an ERC-6492 wrapped signature (spec §3.2).
pub const ERC6492_MAGIC: B256 =
    b256!("6492649264926492649264926492649264926492649264926492649264926492");

/// Half the secp256k1 group order: a larger `s` is the malleable twin of a valid signature.
const SECP256K1_HALF_ORDER: U256 = U256::from_be_bytes(
    b256!("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0").0,
);

/// A verification context (immutable, so one serves every thread).
static SECP256K1: LazyLock<secp256k1::Secp256k1<secp256k1::VerifyOnly>> =
    LazyLock::new(secp256k1::Secp256k1::verification_only);

/// The EIP-712 domain of an EIP-3009 token.
pub fn domain(name: &str, version: &str, chain_id: u64, token: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(Cow::Owned(name.to_owned())),
        Some(Cow::Owned(version.to_owned())),
        Some(U256::from(chain_id)),
        Some(token),
        None,
    )
}

/// The digest the payer signed: `keccak256(0x1901 ‖ domainSeparator ‖ structHash)`.
pub fn digest(auth: &TransferWithAuthorization, domain: &Eip712Domain) -> B256 {
    auth.eip712_signing_hash(domain)
}

/// Why a 65-byte signature was not accepted as an EOA signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EoaSignatureError {
    /// Not 65 bytes.
    #[error("signature is {0} bytes, an EOA signature is 65")]
    Length(usize),
    /// `v` is not 27, 28, 0 or 1.
    #[error("signature v = {0} is not 27, 28, 0 or 1")]
    V(u8),
    /// `s` is in the upper half of the curve order (malleable form).
    #[error("signature s is not in the lower half of the curve order")]
    HighS,
    /// Recovery failed (r or s out of range).
    #[error("signature does not recover to any address")]
    Unrecoverable,
}

/// A parsed 65-byte `r ‖ s ‖ v` signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EoaSignature {
    /// The signature.
    pub sig: Signature,
    /// `v` normalised to 27 or 28, for the `(v, r, s)` overload of `transferWithAuthorization`.
    pub v: u8,
}

impl EoaSignature {
    /// Parses `r ‖ s ‖ v`, rejecting other lengths, unknown `v` and high `s`.
    pub fn parse(bytes: &[u8]) -> Result<Self, EoaSignatureError> {
        let raw: &[u8; 65] = bytes
            .try_into()
            .map_err(|_| EoaSignatureError::Length(bytes.len()))?;
        let (r, rest) = raw.split_at(32);
        let (s, v) = rest.split_at(32);
        let v = v.first().copied().unwrap_or(0xff);
        let parity = match v {
            0 | 27 => false,
            1 | 28 => true,
            other => return Err(EoaSignatureError::V(other)),
        };
        let r = U256::from_be_slice(r);
        let s = U256::from_be_slice(s);
        if s > SECP256K1_HALF_ORDER {
            return Err(EoaSignatureError::HighS);
        }
        Ok(Self {
            sig: Signature::new(r, s, parity),
            v: if parity { 28 } else { 27 },
        })
    }

    /// The address that signed `digest`.
    pub fn recover(&self, digest: &B256) -> Result<Address, EoaSignatureError> {
        let mut compact = [0u8; 64];
        compact[..32].copy_from_slice(&self.sig.r().to_be_bytes::<32>());
        compact[32..].copy_from_slice(&self.sig.s().to_be_bytes::<32>());
        let id = RecoveryId::try_from(i32::from(self.sig.v()))
            .map_err(|_| EoaSignatureError::Unrecoverable)?;
        let sig = RecoverableSignature::from_compact(&compact, id)
            .map_err(|_| EoaSignatureError::Unrecoverable)?;
        let key = SECP256K1
            .recover_ecdsa(secp256k1::Message::from_digest(digest.0), &sig)
            .map_err(|_| EoaSignatureError::Unrecoverable)?;
        // The uncompressed point without its 0x04 prefix: the address is its keccak's tail.
        Ok(Address::from_raw_public_key(
            &key.serialize_uncompressed()[1..],
        ))
    }
}

/// The parts of an ERC-6492 wrapper: `abi.encode(factory, factoryCalldata, innerSignature) ‖ magic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erc6492 {
    /// The factory that deploys the wallet.
    pub factory: Address,
    /// The calldata to send to the factory.
    pub factory_calldata: Bytes,
    /// The signature the deployed wallet validates.
    pub inner: Bytes,
}

/// What the signature bytes look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureForm {
    /// Not wrapped: 65-byte ECDSA or an EIP-1271 blob.
    Plain(Bytes),
    /// ERC-6492 wrapped.
    Wrapped(Erc6492),
    /// Ends with the 6492 magic but does not decode.
    MalformedWrapper,
}

/// Classifies signature bytes by the ERC-6492 magic suffix.
pub fn classify(sig: &Bytes) -> SignatureForm {
    let Some(split) = sig.len().checked_sub(32) else {
        return SignatureForm::Plain(sig.clone());
    };
    let (body, suffix) = sig.split_at(split);
    if suffix != ERC6492_MAGIC.as_slice() {
        return SignatureForm::Plain(sig.clone());
    }
    match <(Address, Bytes, Bytes)>::abi_decode_params(body) {
        Ok((factory, factory_calldata, inner)) => SignatureForm::Wrapped(Erc6492 {
            factory,
            factory_calldata,
            inner,
        }),
        Err(_) => SignatureForm::MalformedWrapper,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{address, hex};
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use alloy::sol_types::SolStruct;
    use proptest::prelude::*;

    proptest! {
        /// libsecp256k1's recovery names the same signer as alloy's own signing (k256), for
        /// any key and digest, with either parity byte form.
        #[test]
        fn recovery_agrees_with_alloys_signer(key in any::<[u8; 32]>(), digest in any::<[u8; 32]>()) {
            let Ok(signer) = PrivateKeySigner::from_bytes(&B256::from(key)) else {
                return Ok(()); // zero or above the group order: not a key
            };
            let digest = B256::from(digest);
            let signature = signer.sign_hash_sync(&digest).expect("signs");
            let mut bytes = signature.as_bytes();
            let parsed = EoaSignature::parse(&bytes).expect("alloy signs low-s");
            prop_assert_eq!(parsed.recover(&digest), Ok(signer.address()));
            bytes[64] -= 27;
            let parsed = EoaSignature::parse(&bytes).expect("v in {0, 1}");
            prop_assert_eq!(parsed.recover(&digest), Ok(signer.address()));
            let other = B256::from(digest.0.map(|b| b ^ 1));
            prop_assert_ne!(parsed.recover(&other), Ok(signer.address()));
        }
    }

    fn v1_message(from: Address) -> TransferWithAuthorization {
        TransferWithAuthorization {
            from,
            to: address!("209693Bc6afc0C5328bA36FaF03C514EF312287C"),
            value: U256::from(10000u64),
            validAfter: U256::from(1740672089u64),
            validBefore: U256::from(1740672154u64),
            nonce: b256!("f3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"),
        }
    }

    fn sepolia_domain() -> Eip712Domain {
        domain(
            "USDC",
            "2",
            84532,
            address!("036CbD53842c5426634e7929541eC2318f3dCF7e"),
        )
    }

    #[test]
    fn typehash_and_domain_separators_match_the_spec() {
        let msg = v1_message(Address::ZERO);
        assert_eq!(
            msg.eip712_type_hash(),
            b256!("7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267")
        );
        assert_eq!(
            sepolia_domain().separator(),
            b256!("71f17a3b2ff373b803d70a5a07c046c1a2bc8e89c09ef722fcb047abe94c9818")
        );
        let base = domain(
            "USD Coin",
            "2",
            8453,
            address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
        );
        assert_eq!(
            base.separator(),
            b256!("02fa7265e7c5d81118673727957699e4d68f74cd74b7db77da710fe8a2c7834f")
        );
    }

    #[test]
    fn spec_vector_v1_recovers_the_payer() {
        let from = address!("857b06519E91e3A54538791bDbb0E22373e36b66");
        let msg = v1_message(from);
        assert_eq!(
            msg.eip712_hash_struct(),
            b256!("49ad644555c7bdf3ea4fc022a4940ae5589b230b1dde0065c5504fa19bbe39a4")
        );
        let d = digest(&msg, &sepolia_domain());
        assert_eq!(
            d,
            b256!("f256992871671abcb27ff92885a7afa46218724e5fc0bac35d050115aa1d22e6")
        );
        let sig = hex!(
            "2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c"
        );
        let parsed = EoaSignature::parse(&sig).expect("valid signature");
        assert_eq!(parsed.recover(&d), Ok(from));

        // The same signature over the Base mainnet domain names somebody else.
        let wrong = domain(
            "USD Coin",
            "2",
            8453,
            address!("036CbD53842c5426634e7929541eC2318f3dCF7e"),
        );
        let other = parsed.recover(&digest(&msg, &wrong)).expect("recovers");
        assert_ne!(other, from);
    }

    #[test]
    fn spec_vector_v2_recovers_anvil_key_0() {
        let from = address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        let msg = v1_message(from);
        let d = digest(&msg, &sepolia_domain());
        assert_eq!(
            d,
            b256!("50708d3bf7216e1aeabe7bf22081b9f36c7c287530f92510318f13a03d89dc86")
        );
        let sig = hex!(
            "dc53a4a579de989368a0fae2ef2172ff2f474b4297013f865d171239f17ef4c3157b4b4030f1bebc53d55ace15c2377dff501a60e1e56c291f1000d6e78f082f1b"
        );
        let parsed = EoaSignature::parse(&sig).expect("valid signature");
        assert_eq!(parsed.v, 27);
        assert_eq!(parsed.recover(&d), Ok(from));

        // v as 0 (y-parity form) is the same signature.
        let mut zero_v = sig;
        zero_v[64] = 0;
        let parsed0 = EoaSignature::parse(&zero_v).expect("v = 0 accepted");
        assert_eq!(parsed0.recover(&d), Ok(from));
    }

    #[test]
    fn high_s_and_bad_v_and_length_are_rejected() {
        let sig = hex!(
            "dc53a4a579de989368a0fae2ef2172ff2f474b4297013f865d171239f17ef4c3157b4b4030f1bebc53d55ace15c2377dff501a60e1e56c291f1000d6e78f082f1b"
        );
        // s' = n - s, with the parity flipped, is the malleable twin.
        let n = U256::from_be_bytes(
            b256!("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141").0,
        );
        let s = U256::from_be_slice(&sig[32..64]);
        let mut twin = sig;
        twin[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
        twin[64] = 28;
        assert_eq!(EoaSignature::parse(&twin), Err(EoaSignatureError::HighS));

        let mut bad_v = sig;
        bad_v[64] = 29;
        assert_eq!(EoaSignature::parse(&bad_v), Err(EoaSignatureError::V(29)));
        assert_eq!(
            EoaSignature::parse(&sig[..64]),
            Err(EoaSignatureError::Length(64))
        );
    }

    #[test]
    fn erc6492_wrapper_round_trips_and_garbage_is_malformed() {
        let factory = address!("1111111111111111111111111111111111111111");
        let inner = Bytes::from(vec![7u8; 65]);
        let mut wrapped =
            (factory, Bytes::from(vec![1u8, 2, 3]), inner.clone()).abi_encode_params();
        wrapped.extend_from_slice(ERC6492_MAGIC.as_slice());
        match classify(&Bytes::from(wrapped)) {
            SignatureForm::Wrapped(w) => {
                assert_eq!(w.factory, factory);
                assert_eq!(w.inner, inner);
            }
            other => panic!("not unwrapped: {other:?}"),
        }
        let mut junk = vec![0u8; 5];
        junk.extend_from_slice(ERC6492_MAGIC.as_slice());
        assert_eq!(
            classify(&Bytes::from(junk)),
            SignatureForm::MalformedWrapper
        );
        assert!(matches!(
            classify(&Bytes::from(vec![1u8; 65])),
            SignatureForm::Plain(_)
        ));
    }
}
