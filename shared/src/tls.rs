//! The process's TLS crypto provider.
//!
//! rustls needs one process-wide crypto provider. Only ring is compiled in (async-nats and
//! tonic use it; reqwest is built with `rustls-no-provider`, so aws-lc-rs, which its `rustls`
//! feature would add, is not): with two, rustls cannot pick one and the first TLS handshake
//! without an installed provider panics ("Could not automatically determine the process-level
//! CryptoProvider"). Every binary still installs ring explicitly at start-up, and connecting to
//! NATS and starting telemetry do it too, so nothing depends on the automatic choice.

/// Installs ring as the process's crypto provider, once; later calls (and a provider
/// installed by someone else first) change nothing.
pub fn install_crypto_provider() {
    // Err only when a provider is already installed: that one stays, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_provider_is_compiled_in_so_rustls_picks_it_without_being_told() {
        // nextest runs this in its own process, where nothing installed a provider: building a
        // configuration works only when exactly one is compiled in (with a second, e.g.
        // reqwest's default aws-lc-rs, this panics, as every unconfigured handshake would).
        let _ = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let provider = rustls::crypto::CryptoProvider::get_default().expect("picked one");
        let ring = rustls::crypto::ring::default_provider();
        assert_eq!(
            provider.cipher_suites.len(),
            ring.cipher_suites.len(),
            "the provider rustls picked is ring"
        );
    }

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
