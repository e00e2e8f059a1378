//! What the operational endpoints read from the store: journal and breaker counts for the
//! `/metrics` gauges, and the pool's usage.

use async_trait::async_trait;

use super::{SqlStore, StoreError};
use crate::metrics::StoreSnapshot;

/// Aggregate reads for `/metrics` (cheap: two grouped counts over indexed columns).
#[async_trait]
pub trait OpsStore: Send + Sync {
    /// Journal entries and breakers per state, and the pool's usage.
    async fn ops_snapshot(&self) -> Result<StoreSnapshot, StoreError>;
}

#[async_trait]
impl OpsStore for SqlStore {
    async fn ops_snapshot(&self) -> Result<StoreSnapshot, StoreError> {
        let settlements: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM settlements GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        let breakers: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM policy_breakers GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        Ok(StoreSnapshot {
            settlements,
            breakers,
            pool_size: self.pool.size(),
            pool_idle: self.pool.num_idle(),
            pool_max: self.pool.options().get_max_connections(),
        })
    }
}
