//! The process's TLS crypto provider.
//!
//! rustls needs one process-wide crypto provider. Two are compiled into every binary (ring,
//! which async-nats enables, and aws-lc-rs, which reqwest's `rustls` feature brings), so rustls
//! cannot pick one by itself and the first TLS handshake without an installed provider panics
//! ("Could not automatically determine the process-level CryptoProvider"). Every binary
//! installs ring at start-up; connecting to NATS and starting telemetry do it too, so a
//! service started in-process (tests) is covered as well.

/// Installs ring as the process's crypto provider, once; later calls (and a provider
/// installed by someone else first) change nothing.
pub fn install_crypto_provider() {
    // Err only when a provider is already installed: that one stays, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_provider_is_installed_once_and_calling_again_is_harmless() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        // A client configuration builds without naming a provider (what async-nats does).
        let roots = rustls::RootCertStore::empty();
        let _ = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
    }
}
