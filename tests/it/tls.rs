//! TLS and mutual TLS, with a CA, server and client certificates made at test time.
//!
//! Transport security does not depend on the database, so these run on SQLite only.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use leadpipe::grpc::pb;
use leadpipe::grpc::pb::lead_service_client::LeadServiceClient;
use leadpipe::server::{App, TlsSettings};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    /// A client certificate from a CA the server does not trust.
    stranger: (String, String),
}

fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (Issuer::new(params, key), cert.pem())
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let (issuer, ca_pem) = ca("leadpipe test CA");
    let (other, _) = ca("someone else's CA");
    Pki {
        ca_pem,
        server: leaf(
            &issuer,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        client: leaf(
            &issuer,
            &["billing-service"],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
        stranger: leaf(&other, &["mallory"], ExtendedKeyUsagePurpose::ClientAuth),
    }
}

struct TlsApp {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    _database: Option<TestDatabase>,
}

async fn serve_tls(pki: &Pki, mtls: bool) -> TlsApp {
    let (url, dir) = fresh_database(Backend::Sqlite).await.unwrap();
    let mut settings = settings_for(&url);
    settings.tls = Some(TlsSettings {
        cert_pem: pki.server.0.clone().into_bytes(),
        key_pem: pki.server.1.clone().into_bytes(),
        client_ca_pem: mtls.then(|| pki.ca_pem.clone().into_bytes()),
    });
    let app = App::build(&settings).await.expect("build app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        app.serve(listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("server");
    });
    TlsApp {
        addr,
        _stop: stop,
        _database: dir,
    }
}

/// A TLS client that trusts the test CA, optionally presenting `identity`.
async fn tls_client(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<LeadServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(LeadServiceClient::new(channel))
}

async fn create_lead(client: &mut LeadServiceClient<Channel>) -> Result<pb::Lead, tonic::Status> {
    client
        .create_lead(pb::CreateLeadRequest {
            lead: Some(new_lead("over TLS")),
            request_id: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

/// A plaintext HTTP/2 client cannot talk to a TLS port.
async fn plaintext_fails(addr: SocketAddr) {
    let endpoint = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    match endpoint.connect().await {
        Err(_) => {}
        Ok(channel) => {
            let result = create_lead(&mut LeadServiceClient::new(channel)).await;
            assert!(
                result.is_err(),
                "a plaintext call to the TLS port succeeded"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_serves_tls_clients_only() {
    let pki = pki();
    let app = serve_tls(&pki, false).await;
    let mut client = tls_client(app.addr, &pki.ca_pem, None)
        .await
        .expect("TLS connect");
    let lead = create_lead(&mut client).await.expect("call over TLS");
    assert_eq!(lead.title, "over TLS");
    plaintext_fails(app.addr).await;
    // A client that does not trust the server's CA refuses the connection.
    let (_, untrusted_ca) = ca("not the server's CA");
    let untrusted = match tls_client(app.addr, &untrusted_ca, None).await {
        Err(_) => true,
        Ok(mut client) => create_lead(&mut client).await.is_err(),
    };
    assert!(
        untrusted,
        "a client accepted a certificate from an unknown CA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mtls_requires_a_client_certificate_from_the_ca() {
    let pki = pki();
    let app = serve_tls(&pki, true).await;
    let mut client = tls_client(app.addr, &pki.ca_pem, Some(&pki.client))
        .await
        .expect("mTLS connect with a client certificate");
    create_lead(&mut client)
        .await
        .expect("call with a client certificate");

    for (what, identity) in [
        ("no client certificate", None),
        ("a certificate from another CA", Some(&pki.stranger)),
    ] {
        let refused = match tls_client(app.addr, &pki.ca_pem, identity).await {
            Err(_) => true,
            // With TLS 1.3 the client finishes its side of the handshake before the server
            // checks the certificate, so the refusal shows as the connection closing on the
            // first call (the client library reports UNAVAILABLE or CANCELLED).
            Ok(mut client) => create_lead(&mut client).await.is_err(),
        };
        assert!(refused, "a client with {what} was served");
    }
    plaintext_fails(app.addr).await;
    // The authorised client is unaffected by the refusals.
    create_lead(&mut client).await.expect("still served");
}

#[test]
fn tls_files_are_read_from_disk() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let cert = write("server.pem", &pki.server.0);
    let key = write("server.key", &pki.server.1);
    let ca = write("ca.pem", &pki.ca_pem);
    let tls = TlsSettings::from_files(&cert, &key, Some(&ca)).unwrap();
    assert_eq!(tls.cert_pem, pki.server.0.as_bytes());
    assert!(tls.client_ca_pem.is_some());
    let missing = TlsSettings::from_files(&dir.path().join("nope.pem"), &key, None)
        .expect_err("a missing file is an error");
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
}
