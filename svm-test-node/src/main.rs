//! A test-only Solana JSON-RPC node: LiteSVM (with the real SPL Token, Token-2022, Memo and
//! ATA programs loaded) behind a minimal single-threaded HTTP/1.1 JSON-RPC server.
//!
//! It binds `127.0.0.1:<port>` (`--port N`, default 0 = any free port), prints
//! `LISTENING <port>` on stdout, and exits when its stdin closes (so a test process that dies
//! never leaves it running).
//!
//! Solana methods (the subset Gatehouse uses): `getLatestBlockhash` (with
//! `lastValidBlockHeight`), `getBlockHeight`, `isBlockhashValid`, `getAccountInfo` (base64),
//! `getBalance`, `simulateTransaction` (base64; `sigVerify` honoured; `replaceRecentBlockhash`
//! must be false), `sendTransaction` (base64; signatures always verified; preflight unless
//! `skipPreflight`; a resend of a processed transaction answers "already been processed"),
//! `getSignatureStatuses`, `getHealth`.
//!
//! Block heights: LiteSVM accepts only its latest blockhash, so the node models time as
//! "expiries": each `test_expireBlockhash` moves to a fresh blockhash and advances the block
//! height past every earlier blockhash's `lastValidBlockHeight` (150 blocks, as on Solana).
//!
//! Test-setup methods: `test_airdrop [pubkey, lamports]`,
//! `test_setMint [address, tokenProgram, decimals, supply]`,
//! `test_setTokenAccount [address, tokenProgram, mint, owner, amount]`,
//! `test_setAccount [address, owner, lamports, dataBase64]`, `test_cloneProgram [from, to]`,
//! `test_expireBlockhash []`, `test_dropTransactions [bool]` (accepted `sendTransaction`s are
//! answered but never executed, as when a leader drops them), `test_outageAfterSend [bool]`
//! (after the next accepted `sendTransaction`, every non-`test_` request answers HTTP 503),
//! `test_outage [bool]` (that outage, now or ended), `test_sendCount []` (accepted sends).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use litesvm::LiteSVM;
use serde_json::{Value, json};
use solana_account::Account;
use solana_address::Address;
use solana_transaction::versioned::VersionedTransaction;

const SPL_TOKEN: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
const TOKEN_2022: &str = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb";
/// Blocks a blockhash stays valid for (Solana's `MAX_PROCESSING_AGE`).
const BLOCKHASH_LIFETIME: u64 = 150;

/// The node: LiteSVM plus what LiteSVM does not track (heights, statuses, fault modes).
struct Node {
    svm: LiteSVM,
    block_height: u64,
    /// Blockhash (base58) → the height at which it was issued.
    issued_at: HashMap<String, u64>,
    /// Signature (base58) → (slot, error or null) of executed transactions.
    statuses: HashMap<String, (u64, Value)>,
    drop_transactions: bool,
    outage_after_send: bool,
    outage: bool,
    sends: u64,
}

impl Node {
    fn new() -> Self {
        // Signature checks are per request (`sigVerify`), done here, not inside LiteSVM.
        let svm = LiteSVM::new().with_sigverify(false);
        let mut node = Self {
            svm,
            block_height: 1_000,
            issued_at: HashMap::new(),
            statuses: HashMap::new(),
            drop_transactions: false,
            outage_after_send: false,
            outage: false,
            sends: 0,
        };
        node.note_blockhash();
        node
    }

    fn note_blockhash(&mut self) {
        let h = self.svm.latest_blockhash().to_string();
        self.issued_at.entry(h).or_insert(self.block_height);
    }

    fn last_valid(&self, blockhash: &str) -> Option<u64> {
        self.issued_at
            .get(blockhash)
            .map(|h| h + BLOCKHASH_LIFETIME)
    }

    fn blockhash_valid(&self, blockhash: &str) -> bool {
        blockhash == self.svm.latest_blockhash().to_string()
            && self
                .last_valid(blockhash)
                .is_some_and(|last| self.block_height <= last)
    }
}

fn main() {
    let mut port: u16 = 0;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--port") {
        port = args.get(i + 1).and_then(|p| p.parse().ok()).unwrap_or(0);
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let mut node = Node::new();
    println!("LISTENING {port}");
    let _ = std::io::stdout().flush();
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Err(e) = serve(&mut node, stream) {
            eprintln!("svm-test-node: connection error: {e}");
        }
    }
}

fn serve(node: &mut Node, stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut content_length = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if first {
            first = false;
            continue;
        }
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    let parsed = serde_json::from_slice::<Value>(&body);
    let mut stream = stream;
    if node.outage && !is_test_only(parsed.as_ref().ok()) {
        let out = "node unavailable";
        write!(
            stream,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
            out.len()
        )?;
        return stream.flush();
    }
    let response = match parsed {
        Ok(Value::Array(calls)) => Value::Array(calls.iter().map(|c| handle(node, c)).collect()),
        Ok(call) => handle(node, &call),
        Err(e) => {
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":e.to_string()}})
        }
    };
    let out = response.to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
        out.len()
    )?;
    stream.flush()
}

/// Whether a request only calls `test_*` methods (those keep working during an outage).
fn is_test_only(body: Option<&Value>) -> bool {
    let test = |c: &Value| {
        c.get("method")
            .and_then(Value::as_str)
            .is_some_and(|m| m.starts_with("test_"))
    };
    match body {
        Some(Value::Array(calls)) => !calls.is_empty() && calls.iter().all(test),
        Some(call) => test(call),
        None => false,
    }
}

fn handle(node: &mut Node, call: &Value) -> Value {
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let method = call.get("method").and_then(Value::as_str).unwrap_or("");
    let empty = Vec::new();
    let params = call
        .get("params")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    match dispatch(node, method, params) {
        Ok(result) => json!({"jsonrpc":"2.0","id":id,"result":result}),
        Err((code, message)) => {
            json!({"jsonrpc":"2.0","id":id,"error":{"code":code,"message":message}})
        }
    }
}

type RpcResult = Result<Value, (i64, String)>;

fn invalid(msg: impl Into<String>) -> (i64, String) {
    (-32602, msg.into())
}

fn param_str(params: &[Value], i: usize) -> Result<&str, (i64, String)> {
    params
        .get(i)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("param {i} must be a string")))
}

fn param_u64(params: &[Value], i: usize) -> Result<u64, (i64, String)> {
    params
        .get(i)
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid(format!("param {i} must be an unsigned integer")))
}

fn param_addr(params: &[Value], i: usize) -> Result<Address, (i64, String)> {
    let s = param_str(params, i)?;
    Address::from_str(s).map_err(|_| invalid(format!("param {i}: invalid pubkey {s}")))
}

fn token_program(params: &[Value], i: usize) -> Result<Address, (i64, String)> {
    let p = param_str(params, i)?;
    if p != SPL_TOKEN && p != TOKEN_2022 {
        return Err(invalid(format!("not a token program: {p}")));
    }
    Address::from_str(p).map_err(|_| invalid("bad program"))
}

fn context(node: &Node) -> Value {
    json!({"slot": node.block_height, "apiVersion": "litesvm-0.16"})
}

fn set(svm: &mut LiteSVM, address: Address, account: Account) -> RpcResult {
    svm.set_account(address, account)
        .map_err(|e| (-32000, format!("set_account: {e:?}")))?;
    Ok(Value::Null)
}

fn coption_key(out: &mut Vec<u8>, key: Option<&Address>) {
    match key {
        Some(k) => {
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(k.as_ref());
        }
        None => out.extend_from_slice(&[0u8; 36]),
    }
}

fn dispatch(node: &mut Node, method: &str, params: &[Value]) -> RpcResult {
    let ctx = context(node);
    match method {
        "getHealth" => Ok(json!("ok")),
        "getLatestBlockhash" => {
            node.note_blockhash();
            let blockhash = node.svm.latest_blockhash().to_string();
            let last = node.last_valid(&blockhash).unwrap_or(0);
            Ok(json!({
                "context": ctx,
                "value": {"blockhash": blockhash, "lastValidBlockHeight": last}
            }))
        }
        "getBlockHeight" => Ok(json!(node.block_height)),
        "isBlockhashValid" => {
            let h = param_str(params, 0)?;
            Ok(json!({"context": ctx, "value": node.blockhash_valid(h)}))
        }
        "sendTransaction" => send(node, params),
        "getSignatureStatuses" => {
            let sigs = params
                .first()
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("param 0 must be an array of signatures"))?;
            let value: Vec<Value> = sigs
                .iter()
                .map(|s| {
                    s.as_str()
                        .and_then(|s| node.statuses.get(s))
                        .map(|(slot, err)| {
                            let status = if err.is_null() {
                                json!({"Ok": null})
                            } else {
                                json!({"Err": err})
                            };
                            json!({
                                "slot": slot,
                                "confirmations": null,
                                "err": err,
                                "status": status,
                                "confirmationStatus": "finalized",
                            })
                        })
                        .unwrap_or(Value::Null)
                })
                .collect();
            Ok(json!({"context": ctx, "value": value}))
        }
        "test_expireBlockhash" => {
            node.svm.expire_blockhash();
            node.block_height += BLOCKHASH_LIFETIME + 1;
            node.note_blockhash();
            Ok(Value::Null)
        }
        "test_dropTransactions" => {
            node.drop_transactions = params.first().and_then(Value::as_bool).unwrap_or(true);
            Ok(Value::Null)
        }
        "test_outageAfterSend" => {
            node.outage_after_send = params.first().and_then(Value::as_bool).unwrap_or(true);
            Ok(Value::Null)
        }
        "test_outage" => {
            node.outage = params.first().and_then(Value::as_bool).unwrap_or(true);
            Ok(Value::Null)
        }
        "test_sendCount" => Ok(json!(node.sends)),
        "getBalance" => {
            let a = param_addr(params, 0)?;
            Ok(json!({"context": ctx, "value": node.svm.get_balance(&a).unwrap_or(0)}))
        }
        "getAccountInfo" => {
            let a = param_addr(params, 0)?;
            let value = node
                .svm
                .get_account(&a)
                .filter(|acc| acc.lamports > 0)
                .map(|acc| {
                    json!({
                        "data": [B64.encode(&acc.data), "base64"],
                        "executable": acc.executable,
                        "lamports": acc.lamports,
                        "owner": acc.owner.to_string(),
                        "rentEpoch": acc.rent_epoch,
                        "space": acc.data.len(),
                    })
                });
            Ok(json!({"context": ctx, "value": value}))
        }
        "simulateTransaction" => simulate(node, params),
        "test_airdrop" => {
            let a = param_addr(params, 0)?;
            let lamports = param_u64(params, 1)?;
            node.svm.airdrop(&a, lamports)
                .map_err(|e| (-32000, format!("airdrop: {:?}", e.err)))?;
            Ok(Value::Null)
        }
        "test_setMint" => {
            let address = param_addr(params, 0)?;
            let program = token_program(params, 1)?;
            let decimals = u8::try_from(param_u64(params, 2)?).map_err(|_| invalid("decimals"))?;
            let supply = param_u64(params, 3)?;
            // spl-token `Mint` layout (82 bytes; Token-2022 without extensions is identical).
            let mut data = Vec::with_capacity(82);
            coption_key(&mut data, None);
            data.extend_from_slice(&supply.to_le_bytes());
            data.push(decimals);
            data.push(1); // is_initialized
            coption_key(&mut data, None);
            let lamports = node.svm.minimum_balance_for_rent_exemption(data.len());
            set(
                &mut node.svm,
                address,
                Account {
                    lamports,
                    data,
                    owner: program,
                    executable: false,
                    rent_epoch: 0,
                },
            )
        }
        "test_setTokenAccount" => {
            let address = param_addr(params, 0)?;
            let program = token_program(params, 1)?;
            let mint = param_addr(params, 2)?;
            let owner = param_addr(params, 3)?;
            let amount = param_u64(params, 4)?;
            // spl-token `Account` layout (165 bytes).
            let mut data = Vec::with_capacity(165);
            data.extend_from_slice(mint.as_ref());
            data.extend_from_slice(owner.as_ref());
            data.extend_from_slice(&amount.to_le_bytes());
            coption_key(&mut data, None); // delegate
            data.push(1); // state = Initialized
            data.extend_from_slice(&[0u8; 12]); // is_native: None
            data.extend_from_slice(&0u64.to_le_bytes()); // delegated_amount
            coption_key(&mut data, None); // close_authority
            let lamports = node.svm.minimum_balance_for_rent_exemption(data.len());
            set(
                &mut node.svm,
                address,
                Account {
                    lamports,
                    data,
                    owner: program,
                    executable: false,
                    rent_epoch: 0,
                },
            )
        }
        "test_setAccount" => {
            let address = param_addr(params, 0)?;
            let owner = param_addr(params, 1)?;
            let lamports = param_u64(params, 2)?;
            let data = B64
                .decode(param_str(params, 3)?)
                .map_err(|e| invalid(format!("data: {e}")))?;
            set(
                &mut node.svm,
                address,
                Account {
                    lamports,
                    data,
                    owner,
                    executable: false,
                    rent_epoch: 0,
                },
            )
        }
        "test_cloneProgram" => {
            // Deploys a copy of a loaded BPF-loader-v2 program (whose account data is the ELF)
            // at another address, e.g. SPL Memo as a stand-in for Lighthouse.
            let from = param_addr(params, 0)?;
            let to = param_addr(params, 1)?;
            let elf = node
                .svm
                .get_account(&from)
                .map(|a| a.data)
                .ok_or_else(|| invalid(format!("no program at {from}")))?;
            node.svm.add_program(to, &elf)
                .map_err(|e| (-32000, format!("add_program: {e:?}")))?;
            Ok(Value::Null)
        }
        other => Err((-32601, format!("Method not found: {other}"))),
    }
}

fn decode_tx(params: &[Value]) -> Result<(VersionedTransaction, Value), (i64, String)> {
    let raw = param_str(params, 0)?;
    let config = params.get(1).cloned().unwrap_or(json!({}));
    if config.get("encoding").and_then(Value::as_str) != Some("base64") {
        return Err(invalid("only base64 encoding is supported"));
    }
    let bytes = B64
        .decode(raw)
        .map_err(|e| invalid(format!("invalid base64: {e}")))?;
    let tx: VersionedTransaction = bincode::deserialize(&bytes)
        .map_err(|e| invalid(format!("failed to deserialize transaction: {e}")))?;
    Ok((tx, config))
}

fn simulate(node: &mut Node, params: &[Value]) -> RpcResult {
    let (tx, config) = decode_tx(params)?;
    if config
        .get("replaceRecentBlockhash")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Err(invalid(
            "replaceRecentBlockhash is not supported by the test node",
        ));
    }
    let sig_verify = config
        .get("sigVerify")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if sig_verify && tx.verify_with_results().iter().any(|ok| !ok) {
        return Err((-32003, "Transaction signature verification failure".into()));
    }
    let ctx = context(node);
    let value = match node.svm.simulate_transaction(tx) {
        Ok(info) => json!({
            "err": null,
            "logs": info.meta.logs,
            "unitsConsumed": info.meta.compute_units_consumed,
            "accounts": null,
            "returnData": null,
        }),
        Err(failed) => json!({
            "err": format!("{:?}", failed.err),
            "logs": failed.meta.logs,
            "unitsConsumed": failed.meta.compute_units_consumed,
            "accounts": null,
            "returnData": null,
        }),
    };
    Ok(json!({"context": ctx, "value": value}))
}

/// `sendTransaction` as a real RPC node answers it: signatures verified, then (unless
/// `skipPreflight`) a preflight simulation whose failure refuses the transaction with -32002;
/// then the transaction is executed and its status recorded (or, in drop mode, forgotten).
fn send(node: &mut Node, params: &[Value]) -> RpcResult {
    let (tx, config) = decode_tx(params)?;
    let signature = tx
        .signatures
        .first()
        .map(|s| s.to_string())
        .ok_or_else(|| invalid("transaction has no signatures"))?;
    if tx.verify_with_results().iter().any(|ok| !ok) {
        return Err((-32003, "Transaction signature verification failure".into()));
    }
    let preflight = !config
        .get("skipPreflight")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let blockhash = tx.message.recent_blockhash().to_string();
    if preflight {
        if node.statuses.contains_key(&signature) {
            return Err((
                -32002,
                "Transaction simulation failed: This transaction has already been processed"
                    .into(),
            ));
        }
        if !node.blockhash_valid(&blockhash) {
            return Err((
                -32002,
                "Transaction simulation failed: Blockhash not found".into(),
            ));
        }
        if let Err(failed) = node.svm.simulate_transaction(tx.clone()) {
            return Err((
                -32002,
                format!("Transaction simulation failed: {:?}", failed.err),
            ));
        }
    }
    node.sends += 1;
    if node.outage_after_send {
        node.outage_after_send = false;
        node.outage = true;
    }
    if node.drop_transactions
        || node.statuses.contains_key(&signature)
        || !node.blockhash_valid(&blockhash)
    {
        // Dropped, a duplicate (Solana deduplicates by signature), or too old to land.
        return Ok(json!(signature));
    }
    let err = match node.svm.send_transaction(tx) {
        Ok(_) => Value::Null,
        Err(failed) => json!(format!("{:?}", failed.err)),
    };
    node.statuses.insert(signature.clone(), (node.block_height, err));
    Ok(json!(signature))
}
