//! A real TLS sender: rustls client, optional client certificate, HTTP/1.1 via hyper.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::Pki;

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct Sender {
    pub addr: SocketAddr,
    config: Arc<ClientConfig>,
}

fn certs(path: &std::path::Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(path: &std::path::Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap()
}

impl Sender {
    /// `client`: a dev-certs name such as "xbs-prod" (its .pem and .key), or None for no
    /// client certificate.
    pub fn new(pki: &Pki, addr: SocketAddr, client: Option<&str>) -> Sender {
        let mut roots = RootCertStore::empty();
        for c in certs(&pki.path("ca.pem")) {
            roots.add(c).unwrap();
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
        let config = match client {
            Some(name) => builder
                .with_client_auth_cert(
                    certs(&pki.path(&format!("{name}.pem"))),
                    key(&pki.path(&format!("{name}.key"))),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Sender {
            addr,
            config: Arc::new(config),
        }
    }

    /// A TLS connection (the handshake only).
    pub async fn tls(&self) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        TlsConnector::from(self.config.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// A keep-alive connection for several requests.
    pub async fn connect(&self) -> std::io::Result<Conn> {
        let tls = self.tls().await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Conn { send })
    }

    /// One request on a new connection.
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> std::io::Result<Resp> {
        self.connect().await?.request("POST", path, headers, body.into()).await
    }
}

pub struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> std::io::Result<Resp> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).map_err(std::io::Error::other)?;
        self.send.ready().await.map_err(std::io::Error::other)?;
        let resp = self.send.send_request(req).await.map_err(std::io::Error::other)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok(Resp { status, headers, body })
    }

    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> std::io::Result<Resp> {
        self.request("POST", path, headers, body.into()).await
    }
}
