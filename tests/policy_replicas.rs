//! DESIGN invariant 3 across real replicas: two `gatehouse` OS processes (the built binary,
//! configured through a gatehouse.toml) share one fresh PostgreSQL database; 200 concurrent
//! verify+settle payments, spread over both, hit a daily cap that admits exactly 10. Exactly
//! 10 are approved and settled, the upstream sees 10 settles, and the committed total in the
//! budget counter equals the cap with nothing left reserved.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use gatehouse::clock::{Clock, SystemClock};
use serde_json::Value;

/// A `gatehouse serve` child process, killed on drop.
struct Replica {
    child: Child,
    addr: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `config_path` and waits for its "listening" line (bounded).
fn spawn_replica(config_path: &std::path::Path) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--config")
        .arg(config_path)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the gatehouse binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep draining stdout for the process's life, so a full pipe never blocks it.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("Facilitator listening on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the replica reports its address within 60 s");
    Replica { child, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_admit_exactly_the_cap() {
    let upstream = test_upstream::start(Duration::from_millis(20)).await;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("gatehouse.toml");
    let config = format!(
        r#"listen = "127.0.0.1:0"
database_url = "{db}"
request_timeout_ms = 120000

[upstream]
url = "{upstream}"
verify_timeout_ms = 60000
settle_timeout_ms = 60000

[chains."{network}"]
onchain_checks = false

[policy.global]
daily_cap = "100000"

[policy.discovery]
enabled = false
"#,
        db = db.url,
        upstream = upstream.url,
        network = TEST_NETWORK,
    );
    std::fs::write(&config_path, config).unwrap();
    // One after the other, so the second finds the schema migrated.
    let a = spawn_replica(&config_path);
    let b = spawn_replica(&config_path);
    assert_ne!(a.addr, b.addr);
    let addrs = Arc::new([a.addr.clone(), b.addr.clone()]);
    let day = SystemClock.now_ms() / 86_400_000;

    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let addrs = addrs.clone();
        tasks.push(tokio::spawn(async move {
            let base = &addrs[i % 2];
            let body = v2_body(&nonce());
            let (_, verified, _) = post_json(&format!("{base}/verify"), &body).await;
            let (_, settled, _) = post_json(&format!("{base}/settle"), &body).await;
            (verified, settled)
        }));
    }
    let (mut approved, mut settled) = (0, 0);
    for task in tasks {
        let (verified, settle_answer): (Value, Value) = task.await.unwrap();
        if verified["isValid"] == true {
            approved += 1;
        } else {
            assert_eq!(
                verified["invalidReason"], "policy_cap_exceeded",
                "{verified}"
            );
        }
        if settle_answer["success"] == true {
            settled += 1;
        }
    }
    eprintln!(
        "two processes: 200 verify+settle took {:?}",
        started.elapsed()
    );
    assert_eq!(approved, 10);
    assert_eq!(settled, 10);
    assert_eq!(upstream.recorded.settle_calls.load(Ordering::SeqCst), 10);

    let store = gatehouse::store::connect(&db.url).await.unwrap();
    let key = format!("global|{ASSET}|day|{day}");
    let counter = store
        .budget_counter(&key)
        .await
        .unwrap()
        .expect("the counter exists");
    assert_eq!((counter.used, counter.reserved), (100_000, 0));
    drop(a);
    drop(b);
}
