//! HTTPS for the mocks (`--tls-cert`/`--tls-key`): what the gateway's TLS upstreams are tested
//! against. Like the platforms' fronts, a connection that does not ask for the mock's name by
//! SNI gets no answer. Each connection's SNI is kept for the recorder, and a refused
//! handshake (the client did not trust the certificate, or sent no or another SNI) is counted
//! in `/__mock/stats`.

use crate::control::{Mock, Peer};
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// The server side of the mocks' TLS: certificate chain and key from PEM files, offering
/// HTTP/2 and HTTP/1.1 by ALPN, as the platforms' API hosts do.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

pub struct TlsListener {
    pub tcp: TcpListener,
    pub acceptor: TlsAcceptor,
    pub mock: Arc<Mock>,
    /// The only server name served (the certificate's).
    pub name: String,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    eprintln!("mock {}: accept: {e}", self.mock.role);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Like real APIs, no Nagle delay: a stream's small events leave as written.
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let sni = tls.get_ref().1.server_name().map(str::to_string);
                    if sni.as_deref() == Some(self.name.as_str()) {
                        return (tls, Peer { sni });
                    }
                    self.mock.tls_refused();
                    eprintln!(
                        "mock {}: TLS from {addr} asked for {sni:?}, not {:?}: closed",
                        self.mock.role, self.name
                    );
                }
                Ok(Err(e)) => {
                    self.mock.tls_refused();
                    eprintln!(
                        "mock {}: TLS handshake with {addr} failed: {e}",
                        self.mock.role
                    );
                }
                Err(_) => {
                    self.mock.tls_refused();
                    eprintln!(
                        "mock {}: TLS handshake with {addr} timed out",
                        self.mock.role
                    );
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr().map(|_| Peer { sni: None })
    }
}
