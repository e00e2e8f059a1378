//! A test-only Solana JSON-RPC node: LiteSVM (with the real SPL Token, Token-2022, Memo and
//! ATA programs loaded) behind a minimal single-threaded HTTP/1.1 JSON-RPC server.
//!
//! It binds `127.0.0.1:<port>` (`--port N`, default 0 = any free port), prints
//! `LISTENING <port>` on stdout, and exits when its stdin closes (so a test process that dies
//! never leaves it running).
//!
//! Solana methods (the subset Gatehouse's checker uses): `getLatestBlockhash`,
//! `getAccountInfo` (base64), `getBalance`, `simulateTransaction` (base64; `sigVerify` honoured;
//! `replaceRecentBlockhash` must be false), `getHealth`. Test-setup methods:
//! `test_airdrop [pubkey, lamports]`, `test_setMint [address, tokenProgram, decimals, supply]`,
//! `test_setTokenAccount [address, tokenProgram, mint, owner, amount]`,
//! `test_setAccount [address, owner, lamports, dataBase64]`, `test_cloneProgram [from, to]`.

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

fn main() {
    let mut port: u16 = 0;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--port") {
        port = args.get(i + 1).and_then(|p| p.parse().ok()).unwrap_or(0);
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    // Signature checks are per request (`sigVerify`), done here, not inside LiteSVM.
    let mut svm = LiteSVM::new().with_sigverify(false);
    println!("LISTENING {port}");
    let _ = std::io::stdout().flush();
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Err(e) = serve(&mut svm, stream) {
            eprintln!("svm-test-node: connection error: {e}");
        }
    }
}

fn serve(svm: &mut LiteSVM, stream: TcpStream) -> std::io::Result<()> {
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
    let response = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(calls)) => Value::Array(calls.iter().map(|c| handle(svm, c)).collect()),
        Ok(call) => handle(svm, &call),
        Err(e) => {
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":e.to_string()}})
        }
    };
    let out = response.to_string();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
        out.len()
    )?;
    stream.flush()
}

fn handle(svm: &mut LiteSVM, call: &Value) -> Value {
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let method = call.get("method").and_then(Value::as_str).unwrap_or("");
    let empty = Vec::new();
    let params = call
        .get("params")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    match dispatch(svm, method, params) {
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

fn context(_svm: &LiteSVM) -> Value {
    json!({"slot": 1, "apiVersion": "litesvm-0.16"})
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

fn dispatch(svm: &mut LiteSVM, method: &str, params: &[Value]) -> RpcResult {
    match method {
        "getHealth" => Ok(json!("ok")),
        "getLatestBlockhash" => Ok(json!({
            "context": context(svm),
            "value": {"blockhash": svm.latest_blockhash().to_string(), "lastValidBlockHeight": 1_000_000u64}
        })),
        "getBalance" => {
            let a = param_addr(params, 0)?;
            Ok(json!({"context": context(svm), "value": svm.get_balance(&a).unwrap_or(0)}))
        }
        "getAccountInfo" => {
            let a = param_addr(params, 0)?;
            let value = svm
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
            Ok(json!({"context": context(svm), "value": value}))
        }
        "simulateTransaction" => simulate(svm, params),
        "test_airdrop" => {
            let a = param_addr(params, 0)?;
            let lamports = param_u64(params, 1)?;
            svm.airdrop(&a, lamports)
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
            let lamports = svm.minimum_balance_for_rent_exemption(data.len());
            set(
                svm,
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
            let lamports = svm.minimum_balance_for_rent_exemption(data.len());
            set(
                svm,
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
                svm,
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
            let elf = svm
                .get_account(&from)
                .map(|a| a.data)
                .ok_or_else(|| invalid(format!("no program at {from}")))?;
            svm.add_program(to, &elf)
                .map_err(|e| (-32000, format!("add_program: {e:?}")))?;
            Ok(Value::Null)
        }
        other => Err((-32601, format!("Method not found: {other}"))),
    }
}

fn simulate(svm: &mut LiteSVM, params: &[Value]) -> RpcResult {
    let raw = param_str(params, 0)?;
    let config = params.get(1).cloned().unwrap_or(json!({}));
    if config.get("encoding").and_then(Value::as_str) != Some("base64") {
        return Err(invalid("only base64 encoding is supported"));
    }
    if config
        .get("replaceRecentBlockhash")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Err(invalid(
            "replaceRecentBlockhash is not supported by the test node",
        ));
    }
    let bytes = B64
        .decode(raw)
        .map_err(|e| invalid(format!("invalid base64: {e}")))?;
    let tx: VersionedTransaction = bincode::deserialize(&bytes)
        .map_err(|e| invalid(format!("failed to deserialize transaction: {e}")))?;
    let sig_verify = config
        .get("sigVerify")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if sig_verify && tx.verify_with_results().iter().any(|ok| !ok) {
        return Err((-32003, "Transaction signature verification failure".into()));
    }
    let ctx = context(svm);
    let value = match svm.simulate_transaction(tx) {
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
