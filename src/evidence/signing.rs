//! Gatehouse's evidence key: an ed25519 key that signs exported bundles and retention
//! checkpoints, published at `GET /.well-known/gatehouse-keys`.
//!
//! The key file holds the 32-byte ed25519 secret seed as 64 hex digits (one line). When the
//! configured file does not exist it is generated on first start (mode 0600).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Why the key could not be loaded or a signature does not verify.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key file could not be read or written.
    #[error("evidence signing key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file does not hold 64 hex digits.
    #[error("evidence signing key {0}: must hold a 32-byte ed25519 seed as 64 hex digits")]
    Malformed(PathBuf),
    /// No randomness to generate a key.
    #[error("cannot generate an evidence signing key: {0}")]
    Random(String),
    /// A public key is not 32 bytes of hex or not a valid point.
    #[error("the public key is not a valid ed25519 key")]
    BadPublicKey,
    /// A signature is not 64 bytes of hex.
    #[error("the signature is malformed")]
    BadSignature,
    /// The signature does not match.
    #[error("the signature does not verify")]
    Invalid,
}

/// The signing key and its id.
#[derive(Clone)]
pub struct EvidenceSigner {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for EvidenceSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("EvidenceSigner")
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// The id of a public key: `gh-` and the first 16 hex digits of its SHA-256.
pub fn key_id(public_key: &VerifyingKey) -> String {
    let digest = Sha256::digest(public_key.as_bytes());
    format!("gh-{}", &hex::encode(digest)[..16])
}

impl EvidenceSigner {
    /// From a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let key_id = key_id(&key.verifying_key());
        Self { key, key_id }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, SigningError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SigningError::Random(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// Loads the key from `path`, generating and writing one if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SigningError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .map_err(|_| SigningError::Malformed(path.to_owned()))?;
                let seed: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| SigningError::Malformed(path.to_owned()))?;
                Ok(Self::from_seed(seed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signer = Self::generate()?;
                write_new_key(path, &hex::encode(signer.key.to_bytes()))?;
                tracing::info!(path = %path.display(), key_id = %signer.key_id, "Generated the evidence signing key.");
                Ok(signer)
            }
            Err(source) => Err(SigningError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    /// Signs `message`; the signature as hex.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        hex::encode(self.key.sign(message).to_bytes())
    }

    /// The JWKS-like document served at `/.well-known/gatehouse-keys`.
    pub fn jwks(&self) -> Value {
        let public = self.key.verifying_key();
        json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": self.key_id,
                "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public.as_bytes()),
                "public_key_hex": self.public_key_hex(),
            }]
        })
    }
}

fn write_new_key(path: &Path, hex_seed: &str) -> Result<(), SigningError> {
    use std::io::Write as _;
    let io = |source| SigningError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(format!("{hex_seed}\n").as_bytes())
        .map_err(io)?;
    Ok(())
}

/// Verifies a hex `signature` by the hex `public_key` over `message`.
pub fn verify_hex(public_key: &str, message: &[u8], signature: &str) -> Result<(), SigningError> {
    let key: [u8; 32] = hex::decode(public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SigningError::BadPublicKey)?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| SigningError::BadPublicKey)?;
    let sig: [u8; 64] = hex::decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SigningError::BadSignature)?;
    key.verify(message, &Signature::from_bytes(&sig))
        .map_err(|_| SigningError::Invalid)
}

/// The key id of a hex public key, if it is one.
pub fn key_id_of_hex(public_key: &str) -> Option<String> {
    let key: [u8; 32] = hex::decode(public_key).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&key).ok().map(|k| key_id(&k))
}

/// What a checkpoint signature covers: a domain tag, the seq and the hash.
pub fn checkpoint_message(seq: i64, hash: &str) -> Vec<u8> {
    format!("gatehouse/evidence-checkpoint/v1\n{seq}\n{hash}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_signatures_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/evidence.key");
        let a = EvidenceSigner::load_or_create(&path).unwrap();
        let b = EvidenceSigner::load_or_create(&path).unwrap();
        assert_eq!(a.public_key_hex(), b.public_key_hex());
        assert_eq!(a.key_id(), key_id_of_hex(&a.public_key_hex()).unwrap());
        let sig = a.sign_hex(b"hello");
        assert!(verify_hex(&a.public_key_hex(), b"hello", &sig).is_ok());
        assert!(matches!(
            verify_hex(&a.public_key_hex(), b"hellO", &sig),
            Err(SigningError::Invalid)
        ));
        std::fs::write(&path, "nothex").unwrap();
        assert!(matches!(
            EvidenceSigner::load_or_create(&path),
            Err(SigningError::Malformed(_))
        ));
        assert_eq!(a.jwks()["keys"][0]["kid"], a.key_id());
    }
}
