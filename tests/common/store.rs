//! Fresh, real databases for store tests: a SQLite file in a temp dir, or a new PostgreSQL
//! database (`GATEHOUSE_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`)
//! dropped when the handle is dropped, even if the test panicked.
//!
//! Include with `#[path = "common/store.rs"] mod store_support;`.
#![allow(dead_code)] // each test crate uses a different subset

use sqlx::Connection;

const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// One throwaway database.
#[derive(Debug)]
pub struct TestDb {
    /// URL to hand to `gatehouse::store::connect`.
    pub url: String,
    pg: Option<PgDatabase>,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug)]
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl TestDb {
    /// A new SQLite file (not yet created: the store must create it).
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("gatehouse.db").display());
        Self {
            url,
            pg: None,
            _dir: Some(dir),
        }
    }

    /// A new, empty PostgreSQL database.
    pub async fn postgres() -> Self {
        sqlx::any::install_default_drivers();
        let admin_url =
            std::env::var("GATEHOUSE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.into());
        let name = format!("gh_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::AnyConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL must be reachable for store tests (GATEHOUSE_TEST_PG_URL)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("GATEHOUSE_TEST_PG_URL must end in /<database>"),
        };
        Self {
            url,
            pg: Some(PgDatabase { admin_url, name }),
            _dir: None,
        }
    }

    /// Whether this is the PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// Runs raw SQL against the database, bypassing the store (to tamper, or to inspect);
    /// returns the rows affected.
    pub async fn execute(&self, sql: &str) -> u64 {
        self.try_execute(sql).await.expect("raw SQL")
    }

    /// [`TestDb::execute`], returning the database's refusal instead of panicking.
    pub async fn try_execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.url).await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        Ok(done?.rows_affected())
    }

    /// Removes the append-only triggers from `evidence`, as an attacker with database access
    /// could, so tests can show the hash chain still catches the edit.
    pub async fn drop_evidence_guards(&self) {
        for trigger in ["evidence_no_update", "evidence_no_delete"] {
            let sql = if self.is_postgres() {
                format!("DROP TRIGGER {trigger} ON evidence")
            } else {
                format!("DROP TRIGGER {trigger}")
            };
            self.execute(&sql).await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(pg) = self.pg.take() else { return };
        // Best effort, on its own runtime: Drop cannot await, and the test's runtime may be gone.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = sqlx::AnyConnection::connect(&pg.admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg.name);
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// Runs each named `async fn(TestDb)` twice: `sqlite::<name>` on a temp file and
/// `postgres::<name>` on a fresh PostgreSQL database.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::store_support::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::store_support::TestDb::postgres().await).await;
                }
            )*
        }
    };
}
