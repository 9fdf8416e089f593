//! A certificate authority for development and tests, and the certificates it signs (rcgen).
//!
//! Every certificate names its service as its common name (what gRPC authorization reads) and
//! as a DNS name (what a client verifies: services dial each other by address, and check the
//! certificate against the service name), plus `localhost`, `127.0.0.1` and any extra hosts.
//! `aggregate certs --out DIR` writes a full set; production brings its own CA (cert-manager,
//! a corporate PKI) with the same naming.

use std::path::{Path, PathBuf};

use crate::grpc_tls::names;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The names a full set holds: the four services, operators, and the NATS servers.
pub const SET: [&str; 6] = [
    names::GATEWAY,
    names::RUNNER,
    names::AGGREGATE,
    names::PROJECTION,
    names::ADMIN,
    names::NATS,
];

pub struct Authority {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Authority {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Self, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let ca = CertifiedIssuer::self_signed(params, key).map_err(|e| e.to_string())?;
        Ok(Self { ca })
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for service `name`, valid for server and client authentication.
    pub fn issue(&self, name: &str, extra_hosts: &[String]) -> Result<Issued, String> {
        let mut hosts = vec![
            name.to_owned(),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ];
        hosts.extend(extra_hosts.iter().cloned());
        hosts.dedup();
        self.issue_exactly(name, hosts)
    }

    /// A certificate for `name` valid for exactly `hosts` (DNS names or IP addresses), as a
    /// production CA issues one (tests of who a name admits).
    pub fn issue_exactly(&self, name: &str, hosts: Vec<String>) -> Result<Issued, String> {
        let mut params = CertificateParams::new(hosts).map_err(|e| format!("{name}: {e}"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params
            .signed_by(&key, &self.ca)
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem` and `<name>.pem` / `<name>-key.pem` for each of `names` into `dir`
    /// (keys readable by the owner only), each valid for `extra_hosts` too and the `nats` one
    /// also for `nats_hosts` (the hosts of a NATS cluster's route URLs: routes admit a member
    /// by them, so no other certificate may carry them). Returns the files written.
    pub fn write_set(
        &self,
        dir: &Path,
        names: &[&str],
        extra_hosts: &[String],
        nats_hosts: &[String],
    ) -> Result<Vec<PathBuf>, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut written = vec![write(dir, "ca.pem", &self.ca_pem(), false)?];
        for name in names {
            let mut hosts = extra_hosts.to_vec();
            if *name == names::NATS {
                hosts.extend(nats_hosts.iter().cloned());
            }
            let issued = self.issue(name, &hosts)?;
            written.push(write(dir, &format!("{name}.pem"), &issued.cert_pem, false)?);
            written.push(write(
                dir,
                &format!("{name}-key.pem"),
                &issued.key_pem,
                true,
            )?);
        }
        Ok(written)
    }
}

fn write(dir: &Path, file: &str, text: &str, secret: bool) -> Result<PathBuf, String> {
    let path = dir.join(file);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DNS names of the certificate in `path`.
    fn dns_names(path: &Path) -> Vec<String> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        use x509_cert::der::Decode;
        use x509_cert::ext::pkix::{SubjectAltName, name::GeneralName};
        let pem = std::fs::read_to_string(path).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let cert = x509_cert::Certificate::from_der(der.as_ref()).unwrap();
        let (_, sans) = cert
            .tbs_certificate
            .get::<SubjectAltName>()
            .unwrap()
            .unwrap();
        sans.0
            .iter()
            .filter_map(|n| match n {
                GeneralName::DnsName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_set_names_each_service_in_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("test CA").unwrap();
        let files = ca
            .write_set(
                dir.path(),
                &["runner", "nats"],
                &["runner.cart.svc".to_owned()],
                &["nats-0.nats-headless".to_owned()],
            )
            .unwrap();
        assert_eq!(files.len(), 5);
        let pem = std::fs::read_to_string(dir.path().join("runner.pem")).unwrap();
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(
            crate::grpc_tls::common_name(der.as_ref()).as_deref(),
            Some("runner")
        );
        let names = dns_names(&dir.path().join("runner.pem"));
        for want in ["runner", "localhost", "runner.cart.svc"] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        // The route hosts admit a NATS member: only the nats certificate carries them.
        assert!(
            !names.iter().any(|n| n.contains("nats-headless")),
            "{names:?}"
        );
        let nats = dns_names(&dir.path().join("nats.pem"));
        assert!(nats.iter().any(|n| n == "nats-0.nats-headless"), "{nats:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("runner-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is private: {mode:o}");
        }
    }
}
