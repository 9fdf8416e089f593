//! A certificate authority made for one test, and the certificates it signs, as PEM files
//! ([`crate::certs`], in a temporary directory).

use std::path::{Path, PathBuf};

use crate::certs::Authority;

pub struct TestPki {
    dir: tempfile::TempDir,
    ca: Authority,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cart-pki-")
            .tempdir()
            .expect("temp dir for the test CA");
        let ca = Authority::new("cart test CA").expect("test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.ca_pem()).expect("write ca.pem");
        Self { dir, ca }
    }

    /// The CA certificate (what clients and servers trust).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `name` (its common name and a DNS name), also valid for `localhost`
    /// and `127.0.0.1`, for both server and client authentication.
    pub fn issue(&self, name: &str) -> CertFiles {
        self.write(name, self.ca.issue(name, &[]).expect("test certificate"))
    }

    /// A certificate for `name` valid for exactly `hosts` (no `localhost`, no `127.0.0.1`),
    /// as a production CA issues one.
    pub fn issue_exactly(&self, name: &str, hosts: &[&str]) -> CertFiles {
        let hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
        let issued = self
            .ca
            .issue_exactly(name, hosts)
            .expect("test certificate");
        self.write(name, issued)
    }

    fn write(&self, name: &str, issued: crate::certs::Issued) -> CertFiles {
        let files = CertFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.cert, issued.cert_pem).expect("write cert");
        std::fs::write(&files.key, issued.key_pem).expect("write key");
        files
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// A server that accepts TLS connections only.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The CA that signed `server` (and, with `verify_clients`, the clients' certificates).
    pub ca: PathBuf,
    pub server: CertFiles,
    /// Mutual TLS: a client must present a certificate the CA signed.
    pub verify_clients: bool,
    /// The certificate this harness's own clients present (needed with `verify_clients`).
    pub client: Option<CertFiles>,
}

impl ServerTls {
    /// A server certificate from `pki`; with `mutual`, clients need one too (and this
    /// harness's own clients present one).
    pub fn from(pki: &TestPki, mutual: bool) -> Self {
        Self {
            ca: pki.ca_file(),
            server: pki.issue("nats"),
            verify_clients: mutual,
            client: mutual.then(|| pki.issue("harness")),
        }
    }
}
