//! A real anvil node for EVM tests: spawned on a free 127.0.0.1 port (killed on drop), with the
//! test contracts from `contracts/out/` deployed and test accounts funded.

#![allow(dead_code)] // each test binary uses a different part

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{SolCall, SolConstructor};
use serde_json::{Value, json};

/// anvil's well-known dev keys (public test keys; never hold value).
pub const DEV_KEYS: [&str; 4] = [
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
];
/// anvil's default chain id.
pub const CHAIN_ID: u64 = 31337;
/// The canonical Multicall3 address, where the test multicall's code is installed.
pub const MULTICALL3: &str = "0xcA11bde05977b3631167028862bE2a173976CA11";
/// Tokens minted to funded accounts (1000 USDC at 6 decimals).
pub const FUNDED: u64 = 1_000_000_000;

sol! {
    contract TestUSDC {
        constructor(string name_, string version_);
        function mint(address to, uint256 amount) external;
    }
    contract TestWallet1271 {
        constructor(address owner_);
    }
    contract TestWalletFactory {
        function deploy(address owner, bytes32 salt) external returns (address wallet);
        function predict(address owner, bytes32 salt) external view returns (address);
    }
}

/// A running anvil with the test contracts deployed.
pub struct Anvil {
    child: Child,
    /// HTTP endpoint.
    pub url: String,
    /// TestUSDC, EIP-712 name `USDC`, version `2`.
    pub usdc: Address,
    /// The CREATE2 wallet factory.
    pub factory: Address,
    /// A deployed EIP-1271 wallet owned by `signer(1)`, funded.
    pub wallet: Address,
    http: reqwest::Client,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The dev signer `i`.
pub fn signer(i: usize) -> PrivateKeySigner {
    DEV_KEYS[i].parse().expect("dev key")
}

/// 65-byte `r ‖ s ‖ v` signature of a prehashed digest.
pub fn sign_digest(key: &PrivateKeySigner, digest: B256) -> Bytes {
    let sig = key.sign_hash_sync(&digest).expect("sign");
    Bytes::from(sig.as_bytes().to_vec())
}

fn anvil_binary() -> PathBuf {
    // Tests run in parallel: install at most once per process (scripts/test.sh installs
    // before any test runs, so this only matters for a bare `cargo test`).
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Ok(p) = std::env::var("GATEHOUSE_ANVIL") {
                return PathBuf::from(p);
            }
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let bin =
                root.join(".tools/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
            if !bin.exists() {
                let status = Command::new(root.join("scripts/install-anvil.sh"))
                    .stdout(Stdio::null())
                    .status()
                    .expect("run scripts/install-anvil.sh");
                assert!(status.success(), "scripts/install-anvil.sh failed");
            }
            bin
        })
        .clone()
}

fn artifact(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("contracts/out/{name}.json"));
    let text = std::fs::read_to_string(&path).expect("contract artifact");
    serde_json::from_str(&text).expect("artifact json")
}

fn artifact_bytes(name: &str, field: &str) -> Vec<u8> {
    let a = artifact(name);
    let hex = a[field].as_str().expect("bytecode field");
    alloy::primitives::hex::decode(hex).expect("bytecode hex")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Anvil {
    /// Starts anvil and deploys everything.
    pub async fn start() -> Self {
        let port = free_port();
        let child = Command::new(anvil_binary())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--silent",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn anvil");
        let mut anvil = Anvil {
            child,
            url: format!("http://127.0.0.1:{port}"),
            usdc: Address::ZERO,
            factory: Address::ZERO,
            wallet: Address::ZERO,
            http: reqwest::Client::new(),
        };
        for _ in 0..200 {
            if anvil.try_rpc("eth_chainId", json!([])).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anvil.rpc("eth_chainId", json!([])).await;

        let mut usdc_code = artifact_bytes("TestUSDC", "bytecode");
        usdc_code.extend(
            TestUSDC::constructorCall {
                name_: "USDC".into(),
                version_: "2".into(),
            }
            .abi_encode(),
        );
        anvil.usdc = anvil.deploy(usdc_code).await;
        anvil.factory = anvil
            .deploy(artifact_bytes("TestWalletFactory", "bytecode"))
            .await;
        let mut wallet_code = artifact_bytes("TestWallet1271", "bytecode");
        wallet_code.extend(
            TestWallet1271::constructorCall {
                owner_: signer(1).address(),
            }
            .abi_encode(),
        );
        anvil.wallet = anvil.deploy(wallet_code).await;
        let multicall = Bytes::from(artifact_bytes("TestMulticall", "deployedBytecode"));
        anvil
            .rpc("anvil_setCode", json!([MULTICALL3, multicall]))
            .await;
        for who in [signer(0).address(), signer(1).address(), anvil.wallet] {
            anvil.mint(who, U256::from(FUNDED)).await;
        }
        anvil
    }

    /// Mints test tokens.
    pub async fn mint(&self, to: Address, amount: U256) {
        let data = TestUSDC::mintCall { to, amount }.abi_encode();
        self.send(Some(self.usdc), data).await;
    }

    /// The counterfactual wallet address for `owner` and `salt`, and the factory calldata.
    pub async fn counterfactual(&self, owner: Address, salt: B256) -> (Address, Bytes) {
        let predict = TestWalletFactory::predictCall { owner, salt }.abi_encode();
        let out = self
            .rpc(
                "eth_call",
                json!([{"to": self.factory, "data": Bytes::from(predict)}, "latest"]),
            )
            .await;
        let raw: Bytes = out.as_str().expect("hex").parse().expect("hex");
        let addr = TestWalletFactory::predictCall::abi_decode_returns(&raw).expect("address");
        let deploy = TestWalletFactory::deployCall { owner, salt }.abi_encode();
        (addr, deploy.into())
    }

    /// Sends a transaction from the unlocked dev account 0 and returns its receipt.
    pub async fn send(&self, to: Option<Address>, data: Vec<u8>) -> Value {
        let mut tx =
            json!({"from": signer(0).address(), "data": Bytes::from(data), "gas": "0x1c9c380"});
        if let Some(to) = to {
            tx["to"] = json!(to);
        }
        let hash = self.rpc("eth_sendTransaction", json!([tx])).await;
        let mut receipt = Value::Null;
        for _ in 0..200 {
            receipt = self.rpc("eth_getTransactionReceipt", json!([hash])).await;
            if !receipt.is_null() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(receipt["status"], "0x1", "transaction failed: {receipt}");
        receipt
    }

    async fn deploy(&self, code: Vec<u8>) -> Address {
        let receipt = self.send(None, code).await;
        receipt["contractAddress"]
            .as_str()
            .expect("contract address")
            .parse()
            .expect("address")
    }

    /// The latest block's timestamp.
    pub async fn block_time(&self) -> u64 {
        let block = self
            .rpc("eth_getBlockByNumber", json!(["latest", false]))
            .await;
        let ts = block["timestamp"].as_str().expect("timestamp");
        u64::from_str_radix(ts.trim_start_matches("0x"), 16).expect("hex timestamp")
    }

    async fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        match v.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(v.to_string()),
        }
    }

    /// One JSON-RPC call; panics on error (test set-up only).
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        self.try_rpc(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }
}

// === Payments ===

/// The recipient the EVM tests pay.
pub const PAY_TO: Address = alloy::primitives::address!("209693Bc6afc0C5328bA36FaF03C514EF312287C");
/// The amount the EVM tests pay (0.01 USDC).
pub const AMOUNT: u64 = 10_000;
/// `maxTimeoutSeconds` of the test requirements.
pub const MAX_TIMEOUT: u64 = 60;
/// anvil's chain as a CAIP-2 id.
pub const NETWORK: &str = "eip155:31337";

/// One EIP-3009 payment under construction: tests change fields, then sign it as a
/// normalised [`gatehouse::protocol::Payment`] (`build`) or as a `/verify` body (`body`).
#[derive(Clone)]
pub struct Pay {
    pub key: PrivateKeySigner,
    pub from: Address,
    pub to: Address,
    pub value: u64,
    pub amount: u64,
    pub valid_after: u64,
    pub valid_before: u64,
    pub nonce: B256,
    pub asset: Address,
    pub pay_to: Address,
    pub sign_name: String,
    pub sign_version: String,
    pub sign_chain_id: u64,
    pub extra_name: String,
    pub extra_version: String,
    pub version: gatehouse::protocol::X402Version,
    /// Overrides the signature `signed()` would produce.
    pub signature: Option<Bytes>,
}

impl Pay {
    /// A valid payment of [`AMOUNT`] from `key` to [`PAY_TO`] in the test token, fresh nonce.
    pub fn new(anvil: &Anvil, now: u64, key: PrivateKeySigner) -> Self {
        let mut nonce = [0u8; 32];
        nonce[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        nonce[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self {
            from: key.address(),
            key,
            to: PAY_TO,
            value: AMOUNT,
            amount: AMOUNT,
            valid_after: now - 600,
            valid_before: now + MAX_TIMEOUT,
            nonce: B256::from(nonce),
            asset: anvil.usdc,
            pay_to: PAY_TO,
            sign_name: "USDC".into(),
            sign_version: "2".into(),
            sign_chain_id: CHAIN_ID,
            extra_name: "USDC".into(),
            extra_version: "2".into(),
            version: gatehouse::protocol::X402Version::V2,
            signature: None,
        }
    }

    /// The EIP-712 message.
    pub fn message(&self) -> gatehouse::chain::evm::abi::TransferWithAuthorization {
        gatehouse::chain::evm::abi::TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: U256::from(self.value),
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        }
    }

    /// The EIP-712 digest under the signing domain.
    pub fn digest(&self) -> B256 {
        use gatehouse::chain::evm::signature;
        let domain = signature::domain(
            &self.sign_name,
            &self.sign_version,
            self.sign_chain_id,
            self.asset,
        );
        signature::digest(&self.message(), &domain)
    }

    /// The signature: the override, or `key`'s over [`Pay::digest`].
    pub fn signed(&self) -> Bytes {
        self.signature
            .clone()
            .unwrap_or_else(|| sign_digest(&self.key, self.digest()))
    }

    /// Spends this authorization on-chain directly (as another facilitator would), so that
    /// Gatehouse later finds its nonce used.
    pub async fn settle_directly(&self, anvil: &Anvil) {
        use alloy::sol_types::SolCall;
        let sig = self.signed().to_vec();
        let m = self.message();
        let call = gatehouse::chain::evm::abi::IEip3009Token::transferWithAuthorization_0Call {
            from: m.from,
            to: m.to,
            value: m.value,
            validAfter: m.validAfter,
            validBefore: m.validBefore,
            nonce: m.nonce,
            v: sig[64],
            r: B256::from_slice(&sig[0..32]),
            s: B256::from_slice(&sig[32..64]),
        }
        .abi_encode();
        anvil.send(Some(anvil.usdc), call).await;
    }

    /// The normalised payment.
    pub fn build(&self) -> gatehouse::protocol::Payment {
        self.build_with(self.signed())
    }

    /// The normalised payment with the given signature.
    pub fn build_with(&self, signature: Bytes) -> gatehouse::protocol::Payment {
        use gatehouse::protocol::{
            AtomicAmount, Authorization, Fingerprint, Network, PaymentExtra,
        };
        gatehouse::protocol::Payment {
            version: self.version,
            network: Network::resolve(NETWORK).expect("network"),
            scheme: "exact".into(),
            asset: format!("{:#x}", self.asset),
            amount: AtomicAmount(U256::from(self.amount)),
            decimals: Some(6),
            payer: Some(format!("{:#x}", self.from)),
            pay_to: format!("{:#x}", self.pay_to),
            resource: Some("https://seller.example/resource".into()),
            description: None,
            max_timeout_secs: MAX_TIMEOUT,
            extra: PaymentExtra {
                eip712_name: Some(self.extra_name.clone()),
                eip712_version: Some(self.extra_version.clone()),
                ..Default::default()
            },
            accepted_mismatches: vec![],
            authorization: Authorization::Eip3009 {
                from: self.from,
                to: self.to,
                value: AtomicAmount(U256::from(self.value)),
                valid_after_secs: self.valid_after,
                valid_before_secs: self.valid_before,
                nonce: self.nonce,
                signature,
            },
            fingerprint: Fingerprint(format!(
                "evm:{CHAIN_ID}:{:#x}:{:#x}:{}",
                self.asset, self.from, self.nonce
            )),
            payment_identifier: None,
        }
    }

    /// A v2 `/verify` / `/settle` request body.
    pub fn body(&self) -> Value {
        let requirements = json!({
            "scheme": "exact",
            "network": NETWORK,
            "amount": self.amount.to_string(),
            "asset": format!("{:#x}", self.asset),
            "payTo": format!("{:#x}", self.pay_to),
            "maxTimeoutSeconds": MAX_TIMEOUT,
            "extra": {"name": self.extra_name, "version": self.extra_version},
        });
        json!({
            "x402Version": 2,
            "paymentPayload": {
                "x402Version": 2,
                "resource": {"url": "https://seller.example/r", "description": "r", "mimeType": "application/json"},
                "accepted": requirements,
                "payload": {
                    "signature": self.signed(),
                    "authorization": {
                        "from": format!("{:#x}", self.from),
                        "to": format!("{:#x}", self.to),
                        "value": self.value.to_string(),
                        "validAfter": self.valid_after.to_string(),
                        "validBefore": self.valid_before.to_string(),
                        "nonce": self.nonce,
                    }
                }
            },
            "paymentRequirements": requirements,
        })
    }
}
