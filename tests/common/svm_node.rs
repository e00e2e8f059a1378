//! A real SVM for tests: starts `svm-test-node` (LiteSVM with the real SPL Token, Token-2022,
//! Memo and ATA programs, behind Solana JSON-RPC) on a free 127.0.0.1 port. The node is built
//! on first use (`cargo build --manifest-path svm-test-node/Cargo.toml`, honouring
//! `CARGO_TARGET_DIR`), so no script needs to build it first. It exits when the test process
//! does (it watches its stdin).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

/// The node's binary, built once per test process.
fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let bin = target.join("debug").join("svm-test-node");
        // Always ask cargo: a no-op when fresh, a rebuild when the node's sources changed.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--manifest-path"])
            .arg(root.join("svm-test-node/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo to build svm-test-node");
        assert!(status.success(), "building svm-test-node failed");
        assert!(
            bin.exists(),
            "svm-test-node binary missing at {}",
            bin.display()
        );
        bin
    })
    .clone()
}

/// A running node.
pub struct SvmNode {
    child: Child,
    /// Its JSON-RPC URL.
    pub url: String,
    http: reqwest::Client,
}

impl Drop for SvmNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SvmNode {
    /// Builds (if needed) and starts a fresh node.
    pub fn start() -> Self {
        let mut child = Command::new(binary())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn svm-test-node");
        let stdout = child.stdout.take().expect("node stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read node banner");
        let port: u16 = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected node banner {line:?}"));
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    /// One JSON-RPC call; panics on a JSON-RPC error.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let resp: Value = self
            .http
            .post(&self.url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send()
            .await
            .expect("node request")
            .json()
            .await
            .expect("node response");
        if let Some(err) = resp.get("error") {
            panic!("{method} failed: {err}");
        }
        resp.get("result").cloned().unwrap_or(Value::Null)
    }

    /// The latest blockhash, base58.
    pub async fn latest_blockhash(&self) -> String {
        self.call("getLatestBlockhash", json!([]))
            .await
            .pointer("/value/blockhash")
            .and_then(Value::as_str)
            .expect("blockhash")
            .to_owned()
    }

    /// Gives `pubkey` lamports.
    pub async fn airdrop(&self, pubkey: &str, lamports: u64) {
        self.call("test_airdrop", json!([pubkey, lamports])).await;
    }

    /// Writes an initialized mint (no authorities) owned by `token_program`.
    pub async fn set_mint(&self, address: &str, token_program: &str, decimals: u8, supply: u64) {
        self.call(
            "test_setMint",
            json!([address, token_program, decimals, supply]),
        )
        .await;
    }

    /// Writes an initialized token account.
    pub async fn set_token_account(
        &self,
        address: &str,
        token_program: &str,
        mint: &str,
        owner: &str,
        amount: u64,
    ) {
        self.call(
            "test_setTokenAccount",
            json!([address, token_program, mint, owner, amount]),
        )
        .await;
    }

    /// Deploys a copy of the program at `from` at `to`.
    pub async fn clone_program(&self, from: &str, to: &str) {
        self.call("test_cloneProgram", json!([from, to])).await;
    }

    /// The token amount held by a token account (bytes 64..72 of its data).
    pub async fn token_balance(&self, address: &str) -> Option<u64> {
        use base64::Engine;
        let info = self
            .call("getAccountInfo", json!([address, {"encoding": "base64"}]))
            .await;
        let data = info.pointer("/value/data/0")?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?;
        let amount: [u8; 8] = bytes.get(64..72)?.try_into().ok()?;
        Some(u64::from_le_bytes(amount))
    }
}

impl SvmNode {
    /// Moves to a fresh blockhash and past the last valid height of every earlier one.
    pub async fn expire_blockhash(&self) {
        self.call("test_expireBlockhash", json!([])).await;
    }

    /// Drop mode: accepted transactions are answered but never executed.
    pub async fn drop_transactions(&self, on: bool) {
        self.call("test_dropTransactions", json!([on])).await;
    }

    /// After the next accepted `sendTransaction`, the node stops answering (HTTP 503).
    pub async fn outage_after_send(&self, on: bool) {
        self.call("test_outageAfterSend", json!([on])).await;
    }

    /// Starts or ends an outage (HTTP 503 to every non-test request).
    pub async fn outage(&self, on: bool) {
        self.call("test_outage", json!([on])).await;
    }

    /// How many `sendTransaction`s the node accepted.
    pub async fn send_count(&self) -> u64 {
        self.call("test_sendCount", json!([]))
            .await
            .as_u64()
            .unwrap_or(0)
    }

    /// The status of a signature (`null` when unknown).
    pub async fn signature_status(&self, signature: &str) -> Value {
        self.call(
            "getSignatureStatuses",
            json!([[signature], {"searchTransactionHistory": true}]),
        )
        .await
        .pointer("/value/0")
        .cloned()
        .unwrap_or(Value::Null)
    }
}
