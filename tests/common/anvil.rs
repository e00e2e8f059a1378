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
