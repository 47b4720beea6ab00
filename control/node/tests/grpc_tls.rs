//! TLS on the gRPC API (rustls with the aws-lc provider), with client certificates required:
//! a client presenting a certificate of the CA gets answers; one without a certificate, or
//! speaking plain HTTP/2, does not; bad TLS configuration is a start-up error naming the flag.

use std::time::{Duration, Instant};

use mesh_proto::v1 as pb;
use mesh_proto::v1::mesh_control_client::MeshControlClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

mod common;
use common::{Node, make_certs};

async fn topology(endpoint: Endpoint) -> Result<pb::Topology, String> {
    let channel = endpoint
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    MeshControlClient::new(channel)
        .get_topology(pb::GetTopologyRequest { domain_id: None })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("call: {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_a_client_ca_is_given() {
    // As the node does: name the provider (a workspace build may enable two).
    let _ = mesh_tls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), &[1, 9]);
    let file = |name: &str| dir.path().join(name);
    let mut a = Node::new(1, vec![]);
    let url = a.with_grpc();
    let port = url.rsplit(':').next().unwrap().to_owned();
    a.extra_args = vec![
        "--grpc-tls-cert".into(),
        file("node-1.pem").into(),
        "--grpc-tls-key".into(),
        file("node-1.key").into(),
        "--grpc-client-ca".into(),
        file("ca.pem").into(),
    ];
    a.start();
    let ca = Certificate::from_pem(std::fs::read(file("ca.pem")).unwrap());
    let me = Identity::from_pem(
        std::fs::read(file("node-9.pem")).unwrap(),
        std::fs::read(file("node-9.key")).unwrap(),
    );
    let https = format!("https://localhost:{port}");
    let with_cert = Endpoint::from_shared(https.clone())
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca.clone())
                .domain_name("localhost")
                .identity(me),
        )
        .unwrap();
    let t0 = Instant::now();
    let topo = loop {
        match topology(with_cert.clone()).await {
            Ok(t) => break t,
            Err(e) => assert!(t0.elapsed() < Duration::from_secs(20), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(topo.node_id, 1);
    let without_cert = Endpoint::from_shared(https).unwrap().tls_config(
        ClientTlsConfig::new()
            .ca_certificate(ca)
            .domain_name("localhost"),
    );
    let e = topology(without_cert.unwrap()).await.unwrap_err();
    // TLS 1.3 refuses the client after the server's flight: the error shows as an alert or a
    // closed connection, depending on timing; either way no answer.
    eprintln!("without a client certificate: {e}");
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    let e = topology(plain).await.unwrap_err();
    eprintln!("plain HTTP/2: {e}");
}

#[test]
fn bad_grpc_tls_configuration_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
            .args([
                "--node-id",
                "1",
                "--enable-grpc",
                "--grpc-listen",
                "127.0.0.1:0",
            ])
            .args(["--listen", "127.0.0.1:0", "--storage", "memory"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let junk = dir.path().join("junk.pem");
    let err = run(&["--grpc-client-ca".as_ref(), junk.as_os_str()]);
    assert!(err.contains("grpc-client-ca:"), "{err}");
    let err = run(&["--grpc-tls-cert".as_ref(), junk.as_os_str()]);
    assert!(err.contains("grpc-tls-key:"), "{err}");
    let err = run(&[
        "--grpc-tls-cert".as_ref(),
        junk.as_os_str(),
        "--grpc-tls-key".as_ref(),
        junk.as_os_str(),
    ]);
    assert!(err.contains("--grpc-tls-cert"), "{err}");
}
