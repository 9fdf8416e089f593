//! The payment provider: the Klarna Checkout v3 order shape, an HTTP client for it, and a mock
//! provider speaking the same HTTP shape for dev and tests.

pub mod client;
pub mod mock;
mod mock_trace;
pub mod order;

pub use client::{ProviderClient, ProviderConfig, ProviderError};
pub use order::{MerchantUrls, Order};

/// Where `Reload` reads the provider configuration from (the environment and config file in
/// production; tests inject their own).
pub type ReloadSource = std::sync::Arc<dyn Fn() -> Result<ProviderConfig, String> + Send + Sync>;
