//! deploy/nats/cluster-tls.conf run for real: three members on loopback, from the shipped
//! files with their certificate paths pointed at a test CA's, form a JetStream cluster over
//! encrypted routes (dialled as `localhost`, a DNS name of the members' certificate), and a
//! route port gives nothing to whoever is not a member: a plaintext peer, a TLS peer without a
//! certificate, and one with a certificate of the same CA that names no route host (a
//! service's).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use shared::test_support::{CertFiles, TestPki, server_binary_or_skip};

use crate::common::{read, root};
use crate::members::Members;
use crate::nats::{NATS_DIR, with_tls_files};

#[tokio::test]
async fn the_kubernetes_nats_cluster_forms_over_tls_routes_that_refuse_strangers() {
    let Some(bin) = server_binary_or_skip() else {
        return;
    };
    shared::tls::install_crypto_provider();
    let pki = TestPki::new();
    let server = pki.issue("nats");
    let admin = pki.issue("admin");
    // A service's certificate as a production CA issues it: its own name only.
    let stranger = pki.issue_exactly("gateway", &["gateway"]);
    let dir = tempfile::tempdir().unwrap();
    let conf = write_shipped_configs(dir.path(), &server, &pki.ca_file());

    let mut members = Members::new(bin, conf, dir.path(), "localhost");
    for i in 0..3 {
        members.start(i);
    }
    members.wait_formed().await;
    let (ports, accounts) = (&members.ports, &members.accounts);

    // A stream with three replicas takes writes: every member is in it, over the TLS routes.
    let config = shared::nats::NatsConfig {
        url: format!("tls://127.0.0.1:{}", ports[0].client),
        name: "cluster-tls-test".into(),
        user: "admin".into(),
        password: accounts.password("admin").into(),
        tls_required: true,
        tls_ca_file: pki.ca_file().display().to_string(),
        tls_cert_file: admin.cert.display().to_string(),
        tls_key_file: admin.key.display().to_string(),
        ..Default::default()
    };
    let client = shared::nats::connect(&config).await.unwrap();
    let js = shared::nats::jetstream(client, &config);
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "TLS_ROUTES".into(),
            subjects: vec!["tls.routes".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let ack = js.publish("tls.routes", "over tls".into()).await.unwrap();
    assert_eq!(ack.await.unwrap().sequence, 1);
    let info = stream.info().await.unwrap();
    let cluster = info.cluster.as_ref().expect("a replicated stream");
    assert_eq!(cluster.replicas.len(), 2, "{cluster:?}");

    // Strangers at a route port: nothing is sent to them, the connection ends.
    let route = ports[0].route;
    let ca = pki.ca_file();
    let (plain, no_cert, service, member) = tokio::task::spawn_blocking(move || {
        (
            first_bytes_plaintext(route),
            route_exchange(route, &ca, None),
            route_exchange(route, &ca, Some(&stranger)),
            route_exchange(route, &ca, Some(&server)),
        )
    })
    .await
    .unwrap();
    let plain = plain.unwrap();
    assert!(
        plain.is_empty(),
        "a plaintext peer at the route port gets nothing (the server waits for TLS, then \
         closes), got {}",
        String::from_utf8_lossy(&plain)
    );
    let refused = no_cert.expect_err("a TLS peer without a certificate must be refused");
    assert!(
        refused.to_string().contains("CertificateRequired"),
        "a TLS peer without a certificate is refused for that reason: {refused}"
    );
    // A certificate of the CA is not enough: the route's CONNECT is refused unless the
    // certificate names a route host.
    let service = String::from_utf8_lossy(&service.unwrap()).into_owned();
    assert!(
        service.contains("-ERR 'Authorization Violation'"),
        "a peer whose certificate names no route host is refused at CONNECT: {service}"
    );
    // The same exchange with a member's certificate is answered (so the refusals above are
    // about the certificate, not the test's TLS or CONNECT).
    let hello = String::from_utf8_lossy(&member.unwrap()).into_owned();
    assert!(
        hello.starts_with("INFO {") && hello.contains("PONG") && !hello.contains("-ERR"),
        "a member's certificate gets the route INFO and its PING answered: {hello}"
    );
}

/// Every file of deploy/nats written to `dir`, its tls blocks' files pointed at `server`'s
/// certificate and `ca`; returns the path of cluster-tls.conf there.
fn write_shipped_configs(dir: &Path, server: &CertFiles, ca: &Path) -> std::path::PathBuf {
    let file_of = |var: &str| {
        let file = match var {
            "_CERT_FILE" => server.cert.as_path(),
            "_KEY_FILE" => server.key.as_path(),
            _ => ca,
        };
        file.display().to_string()
    };
    for entry in std::fs::read_dir(root().join(NATS_DIR)).unwrap() {
        let path = entry.unwrap().path();
        let text = with_tls_files(&read(&path), file_of);
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
    }
    dir.join("cluster-tls.conf")
}

/// The first bytes a route port sends a peer that connects without TLS (none: it closed).
fn first_bytes_plaintext(port: u16) -> std::io::Result<Vec<u8>> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut buf = vec![0; 512];
    let n = tcp.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// What a route port sends after a TLS handshake that trusts `ca`, presenting `identity` (or
/// no certificate): its INFO, then, after a route's CONNECT and a PING, its answer (a PONG, or
/// the refusal) until it goes quiet or closes.
fn route_exchange(port: u16, ca: &Path, identity: Option<&CertFiles>) -> std::io::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&id.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&id.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut got = vec![0; 1024];
    let n = tls.read(&mut got)?;
    got.truncate(n);
    tls.write_all(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":true,\
          \"name\":\"stranger\",\"cluster\":\"cart\",\"headers\":true}\r\nPING\r\n",
    )?;
    tls.sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0; 1024];
    // Until the answer is in: a PONG or an -ERR, or the server closed.
    while !(got.windows(4).any(|w| w == b"PONG") || got.windows(4).any(|w| w == b"-ERR")) {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if got.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(got)
}
