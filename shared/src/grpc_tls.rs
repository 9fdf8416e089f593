//! Service identity between the services' gRPC endpoints: mutual TLS from one CA, and who may
//! call what.
//!
//! Each service has a certificate whose common name is its service name (`gateway`, `runner`,
//! `aggregate`, `projection`; `admin` for operators) and whose DNS names include that name, all
//! signed by one CA (`aggregate certs` makes a dev set). With `GRPC_TLS_*` set, a server only
//! accepts clients with a certificate from that CA, and a client verifies the server by its
//! service name (not by the address it dialed: aggregate nodes advertise pod addresses). An
//! RPC then checks the caller's name against its rule ([`authorize`]). Without `GRPC_TLS_*`
//! everything is plaintext and unauthenticated: the local default (`scripts/dev`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The service names certificates carry, and what each stands for.
pub mod names {
    pub const GATEWAY: &str = "gateway";
    pub const RUNNER: &str = "runner";
    pub const AGGREGATE: &str = "aggregate";
    pub const PROJECTION: &str = "projection";
    /// Operators (admin RPCs with a client of their own).
    pub const ADMIN: &str = "admin";
    /// The NATS servers (their client and route certificate).
    pub const NATS: &str = "nats";
}

/// `GRPC_TLS_CA_FILE`, `GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE` (PEM): all three, or none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcTls {
    /// The CA that signed every service's certificate.
    pub ca_file: String,
    /// This service's certificate and key (server identity, and client identity for its
    /// calls).
    pub cert_file: String,
    pub key_file: String,
}

struct Files {
    ca: Certificate,
    identity: Identity,
}

impl GrpcTls {
    pub fn enabled(&self) -> bool {
        !(self.ca_file.is_empty() && self.cert_file.is_empty() && self.key_file.is_empty())
    }

    /// Start-up check: all three set or none, and each file readable.
    pub fn check(&self) -> Result<(), String> {
        self.files().map(|_| ())
    }

    fn files(&self) -> Result<Option<Files>, String> {
        if !self.enabled() {
            return Ok(None);
        }
        if self.ca_file.is_empty() || self.cert_file.is_empty() || self.key_file.is_empty() {
            return Err(
                "GRPC_TLS_CA_FILE, GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE must be set together"
                    .into(),
            );
        }
        let read = |var: &str, path: &str| {
            std::fs::read(path).map_err(|e| format!("{var} {path:?} cannot be read: {e}"))
        };
        let ca = read("GRPC_TLS_CA_FILE", &self.ca_file)?;
        let cert = read("GRPC_TLS_CERT_FILE", &self.cert_file)?;
        let key = read("GRPC_TLS_KEY_FILE", &self.key_file)?;
        crate::tls::install_crypto_provider();
        Ok(Some(Files {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
        }))
    }

    /// The server side: this service's certificate, and clients must present one from the CA.
    /// `None` without TLS.
    pub fn server(&self) -> Result<Option<ServerTlsConfig>, String> {
        Ok(self.files()?.map(|f| {
            ServerTlsConfig::new()
                .identity(f.identity)
                .client_ca_root(f.ca)
                // A peer that connects and never completes the handshake does not hold a
                // task for ever.
                .timeout(std::time::Duration::from_secs(10))
        }))
    }

    /// A server builder with [`Self::server`] applied, each call in a span joined to the
    /// caller's trace ([`crate::spans::grpc_server_span`]).
    pub fn server_builder(&self) -> Result<tonic::transport::Server, String> {
        let builder = tonic::transport::Server::builder().trace_fn(crate::spans::grpc_server_span);
        match self.server()? {
            None => Ok(builder),
            Some(tls) => builder
                .tls_config(tls)
                .map_err(|e| format!("gRPC server TLS: {e}")),
        }
    }

    /// The endpoint for calls to `service` at `addr` (`host:port` or a URI): plaintext without
    /// TLS; with it `https`, the server verified as `service`, this service's certificate
    /// presented.
    pub fn endpoint(&self, addr: &str, service: &str) -> Result<Endpoint, String> {
        let Some(files) = self.files()? else {
            return crate::config::grpc_endpoint(addr);
        };
        let addr = addr.trim();
        let host_port = addr
            .strip_prefix("http://")
            .or_else(|| addr.strip_prefix("https://"))
            .unwrap_or(addr);
        crate::config::grpc_endpoint(&format!("https://{host_port}"))?
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(files.ca)
                    .identity(files.identity)
                    .domain_name(service),
            )
            .map_err(|e| format!("TLS for {service} at {addr:?}: {e}"))
    }
}

/// Who called: the service name in the caller's certificate (its common name), or nobody on
/// a plaintext connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(Option<String>);

/// The first common name in a DER certificate's subject (UTF8String or PrintableString), if
/// the certificate parses and has one.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    use x509_cert::der::oid::db::rfc4519::CN;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == CN)
        .and_then(|atv| std::str::from_utf8(atv.value.value()).ok())
        .map(str::to_owned)
}

impl Caller {
    /// The caller of `req`. A certificate that names no service is refused.
    pub fn of<T>(req: &tonic::Request<T>) -> Result<Self, tonic::Status> {
        let Some(certs) = req.peer_certs() else {
            return Ok(Self(None));
        };
        let certs: Arc<Vec<_>> = certs;
        certs
            .first()
            .and_then(|der| common_name(der.as_ref()))
            .map(|cn| Self(Some(cn)))
            .ok_or_else(|| {
                let mut status: tonic::Status = crate::ApiError::new(
                    crate::ErrorCode::Unauthenticated,
                    "the client certificate names no service (common name)",
                )
                .into();
                status.metadata_mut().insert(
                    crate::error::GRPC_DENIED_CALLER_KEY,
                    tonic::metadata::MetadataValue::from_static("(no common name)"),
                );
                status
            })
    }

    /// The service `name` calling from this same process (no connection, no certificate): it
    /// is held to what that service may call, as its certificate would hold it.
    pub fn in_process(name: &str) -> Self {
        Self(Some(name.to_owned()))
    }

    /// The service name, `None` on a plaintext connection.
    pub fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Refuses `rpc` unless the caller is one of `allowed`. A plaintext connection carries no
    /// identity and is allowed: that is a server running without TLS (with TLS every client
    /// presents a certificate from the CA, or the handshake fails).
    pub fn require(&self, rpc: &str, allowed: &[&str]) -> Result<(), tonic::Status> {
        let Some(who) = &self.0 else {
            return Ok(());
        };
        if allowed.contains(&who.as_str()) {
            return Ok(());
        }
        metrics::counter!(crate::metrics::GRPC_CALLS_DENIED, "rpc" => rpc.to_owned(), "caller" => who.clone()).increment(1);
        tracing::warn!(target: "audit", rpc, caller = %who, "gRPC call refused for this service identity");
        let mut status: tonic::Status = crate::ApiError::new(
            crate::ErrorCode::PermissionDenied,
            format!(
                "{rpc} may be called by {} only; this caller is {who:?}",
                allowed.join(", ")
            ),
        )
        .into();
        if let Ok(v) = who.parse() {
            status
                .metadata_mut()
                .insert(crate::error::GRPC_DENIED_CALLER_KEY, v);
        }
        Err(status)
    }
}

/// [`Caller::require`] for the caller of `req`.
pub fn authorize<T>(
    req: &tonic::Request<T>,
    rpc: &str,
    allowed: &[&str],
) -> Result<(), tonic::Status> {
    Caller::of(req)?.require(rpc, allowed)
}
