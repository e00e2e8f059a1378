//! Several real `gatehouse` processes on one PostgreSQL database behind nginx (round robin),
//! loaded from a separate process (node): every payment is settled at most once (the
//! upstream sees each once, the journal holds each once), the shared daily cap holds across
//! replicas, and the evidence chain written by all of them verifies.
//!
//! Needs nginx (Debian package; `scripts/test.sh` installs it) and node. Missing tools fail
//! the test, never pass it.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use gatehouse::policy::Atomic;
use serde_json::{Value, json};

const REPLICAS: usize = 3;
const PAYMENTS: usize = 30;
const SETTLE_COPIES: usize = 3;
/// The daily cap admits this many of the test payments (10000 atomic units each).
const CAP_PAYMENTS: usize = 20;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed on drop (after the test's own graceful stop, a no-op).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGTERM, then wait for a clean exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        self.0.wait().expect("wait")
    }
}

fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("nginx is not installed (Debian package `nginx`; scripts/test.sh installs it)");
}

async fn wait_until_up(url: &str) {
    for _ in 0..150 {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not come up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_behind_nginx_settle_once_hold_caps_and_keep_one_evidence_chain() {
    let db = TestDb::postgres().await;
    // Settles overlap: duplicates of one payment race on different replicas.
    let upstream = test_upstream::start(Duration::from_millis(150)).await;
    let dir = tempfile::tempdir().expect("temp dir");

    // One migration first, as a deployment's init step would; replicas then start on it.
    let mut config = test_config(&db.url, &upstream.url);
    config.policy.global.daily_cap = Some(Atomic(10_000 * CAP_PAYMENTS as i64));
    // The global cap is the one under test (discovery's default per-endpoint rate limit of
    // 10 a minute would bind first).
    config.policy.discovery.enabled = false;
    let bin = env!("CARGO_BIN_EXE_gatehouse");
    let mut replicas = Vec::new();
    let mut ports = Vec::new();
    for i in 0..REPLICAS {
        let port = free_port();
        config.listen = format!("127.0.0.1:{port}");
        let path = dir.path().join(format!("gatehouse-{i}.toml"));
        // The URL is a Secret (masked when serialised): it goes by environment instead.
        std::fs::write(&path, toml::to_string(&config).expect("toml")).expect("write config");
        let log = std::fs::File::create(dir.path().join(format!("gatehouse-{i}.log"))).unwrap();
        let child = Command::new(bin)
            .args(["--config", path.to_str().unwrap(), "serve"])
            .env("GATEHOUSE_DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gatehouse");
        replicas.push(Proc(child));
        ports.push(port);
    }
    for port in &ports {
        wait_until_up(&format!("http://127.0.0.1:{port}/ready")).await;
    }

    // nginx, round robin over the replicas, its config and state in the temp dir.
    let lb_port = free_port();
    let servers: String = ports
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p};\n"))
        .collect();
    let prefix = dir.path().join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = format!(
        "worker_processes 1;\n\
         error_log {p}/logs/error.log warn;\n\
         pid {p}/nginx.pid;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
           upstream gatehouse {{\n{servers}  }}\n\
           server {{\n\
             listen 127.0.0.1:{lb_port};\n\
             location / {{ proxy_pass http://gatehouse; proxy_next_upstream off; }}\n\
           }}\n\
         }}\n",
        p = prefix.display()
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut nginx = Proc(
        Command::new(nginx_binary())
            .args([
                "-p",
                prefix.to_str().unwrap(),
                "-c",
                conf_path.to_str().unwrap(),
            ])
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx"),
    );
    let lb = format!("http://127.0.0.1:{lb_port}");
    wait_until_up(&format!("{lb}/health")).await;

    // The load, from a second process.
    let payments: Vec<Value> = (0..PAYMENTS).map(|_| v2_body(&nonce())).collect();
    let input = dir.path().join("load.json");
    std::fs::write(
        &input,
        json!({"url": lb, "payments": payments, "settleCopies": SETTLE_COPIES}).to_string(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/multi_replica_load.mjs");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&script)
            .arg(&input)
            .output()
            .expect("node runs")
    })
    .await
    .expect("load process");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("load output");

    // Caps hold across replicas: exactly CAP_PAYMENTS verifies approved.
    let approved: Vec<usize> = (0..PAYMENTS)
        .filter(|&i| result["verify"][i]["body"]["isValid"] == true)
        .collect();
    for i in 0..PAYMENTS {
        assert_eq!(
            result["verify"][i]["status"], 200,
            "{}",
            result["verify"][i]
        );
    }
    assert_eq!(approved.len(), CAP_PAYMENTS, "{}", result["verify"]);

    // Exactly one successful settle per approved payment; none for the rest.
    let mut settled = 0;
    for i in 0..PAYMENTS {
        let wins = result["settle"][i]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["body"]["success"] == true)
            .count();
        let expected = usize::from(approved.contains(&i));
        assert_eq!(wins, expected, "payment {i}: {}", result["settle"][i]);
        settled += wins;
        for r in result["settle"][i].as_array().unwrap() {
            let status = r["status"].as_u64().unwrap_or(0);
            assert!(
                status == 200 || status == 409,
                "a refused duplicate is a 200 refusal or a 409, never {status}: {r}"
            );
        }
    }
    assert_eq!(settled, CAP_PAYMENTS);

    // The upstream saw each payment once: no double settlement.
    let bodies = upstream.recorded.settle_bodies.lock().await;
    let distinct: HashSet<&[u8]> = bodies.iter().map(|b| b.as_ref()).collect();
    assert_eq!(
        upstream.recorded.settle_calls.load(Ordering::SeqCst),
        CAP_PAYMENTS
    );
    assert_eq!(distinct.len(), CAP_PAYMENTS);
    drop(bodies);

    // Each replica served some of the load (round robin actually spread it).
    let mut served = 0;
    for port in &ports {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("gatehouse_decisions_total{gate=\"verify\"") {
            served += 1;
        }
    }
    assert_eq!(served, REPLICAS, "round robin reached every replica");

    // Graceful stop of every replica (SIGTERM → exit 0), then the shared store is checked.
    let _ = nginx.terminate();
    for replica in &mut replicas {
        assert!(replica.terminate().success(), "clean exit on SIGTERM");
    }
    let store = gatehouse::store::connect(&db.url).await.expect("store");
    let journal = db
        .execute("UPDATE settlements SET state = state WHERE state = 'settled'")
        .await;
    assert_eq!(
        journal, CAP_PAYMENTS as u64,
        "the journal holds each payment once"
    );
    let report = gatehouse::evidence::verify_store(&*store)
        .await
        .expect("the evidence chain written by all replicas verifies");
    // Every verify and every settle that reached a decision left a record.
    assert!(
        report.records >= (PAYMENTS + CAP_PAYMENTS) as u64,
        "{report:?}"
    );
}
