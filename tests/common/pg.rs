//! A fresh PostgreSQL database per test, on the server at 127.0.0.1:5432 (override the admin
//! URL with `GATEHOUSE_TEST_PG_URL`). Dropped, best effort, when the guard goes.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The admin connection URL.
pub fn admin_url() -> String {
    std::env::var("GATEHOUSE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test.
pub struct FreshDatabase {
    /// Its URL.
    pub url: String,
    name: String,
}

/// Creates a new, empty database.
pub async fn fresh_database() -> FreshDatabase {
    let admin = admin_url();
    let name = format!("gh_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL reachable (the test command starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    FreshDatabase {
        url: format!("{base}/{name}"),
        name,
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let admin = admin_url();
        let name = self.name.clone();
        // Drop on a separate thread with its own runtime: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
