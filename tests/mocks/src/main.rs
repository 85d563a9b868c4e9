//! `cxgate-mocks`: stand-ins for Genesys Cloud, NICE CXone and an OpenAI-compatible LLM, one
//! listener per role. They speak the seed shapes and the real API shapes (see
//! the platforms' API references), enforce tokens, and take faults through `/__mock/*`.

mod bots;
mod control;
mod cxone;
mod genesys;
mod llm;
mod llm_chain;
mod tls;

use axum::serve::ListenerExt;

use clap::Parser;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Parser, Debug, Clone)]
#[command(about = "Mock Genesys Cloud / NICE CXone / LLM platforms for cxgate")]
pub struct Args {
    /// Serve the Genesys Cloud role here (login + API on one port).
    #[arg(long)]
    genesys: Option<SocketAddr>,
    /// Serve the NICE CXone role here (discovery, auth and API on one port).
    #[arg(long)]
    cxone: Option<SocketAddr>,
    /// Serve the OpenAI-compatible LLM role here.
    #[arg(long)]
    llm: Option<SocketAddr>,
    /// Genesys token lifetime (s); Genesys allows 300..172800 per OAuth client.
    #[arg(long, default_value_t = 86_400)]
    genesys_token_ttl: u64,
    /// CXone token lifetime (s).
    #[arg(long, default_value_t = 3_600)]
    cxone_token_ttl: u64,
    /// Also accept client credentials in the token request's form body (RFC 6749 §2.3.1), as
    /// Envoy's native oauth2 credential injector sends them. Off by default: Genesys is
    /// documented with HTTP Basic only. The benchmark's native anchor turns it on.
    #[arg(long)]
    genesys_body_credentials: bool,
    /// Genesys API requests per minute per token (0 = unlimited). Real default: 300.
    #[arg(long, default_value_t = 300)]
    genesys_rate_limit: u64,
    #[arg(
        long,
        env = "MOCK_GENESYS_CLIENT_ID",
        default_value = "demo-genesys-client"
    )]
    genesys_client_id: String,
    #[arg(
        long,
        env = "MOCK_GENESYS_CLIENT_SECRET",
        default_value = "demo-genesys-secret"
    )]
    genesys_client_secret: String,
    #[arg(
        long,
        env = "MOCK_CXONE_CLIENT_ID",
        default_value = "demo-cxone-client"
    )]
    cxone_client_id: String,
    #[arg(
        long,
        env = "MOCK_CXONE_CLIENT_SECRET",
        default_value = "demo-cxone-secret"
    )]
    cxone_client_secret: String,
    #[arg(
        long,
        env = "MOCK_CXONE_ACCESS_KEY_ID",
        default_value = "demo-access-key"
    )]
    cxone_access_key_id: String,
    #[arg(
        long,
        env = "MOCK_CXONE_ACCESS_KEY_SECRET",
        default_value = "demo-access-key-secret"
    )]
    cxone_access_key_secret: String,
    #[arg(long, env = "MOCK_LLM_API_KEY", default_value = "demo-llm-key")]
    llm_api_key: String,
    /// How long a new model endpoint stays PROVISIONING (ms).
    #[arg(long, default_value_t = 1500)]
    llm_provision_ms: u64,
    /// Serve HTTPS with this certificate chain (PEM), offering HTTP/2 and HTTP/1.1; with
    /// `--tls-key`. Every role's listener then speaks TLS only.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The certificate's name: the host in the URLs the mocks hand out (CXone discovery), and
    /// the only SNI served (a connection asking for no or another name is closed).
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// Items per page the mock's data sets hold (queues, skills, users, agents).
    #[arg(long, default_value_t = 60)]
    dataset_size: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let acceptor = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match tls::acceptor(cert, key) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("cxgate-mocks: TLS: {e}");
                std::process::exit(2);
            }
        },
        _ => None,
    };
    let mut tasks = Vec::new();
    let roles: [(Option<SocketAddr>, &str); 3] = [
        (args.genesys, "genesys"),
        (args.cxone, "cxone"),
        (args.llm, "llm"),
    ];
    for (addr, role) in roles {
        let Some(addr) = addr else { continue };
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cxgate-mocks: cannot bind {role} on {addr}: {e}");
                std::process::exit(2);
            }
        };
        let local = listener.local_addr().unwrap_or(addr);
        let base = match &acceptor {
            Some(_) => format!("https://{}:{}", args.tls_name, local.port()),
            None => format!("http://{local}"),
        };
        let mock = Arc::new(control::Mock::new(role));
        let app = match role {
            "genesys" => genesys::router(mock.clone(), &args),
            "cxone" => cxone::router(mock.clone(), &args, &base),
            _ => llm::router(mock.clone(), &args),
        };
        let app = control::wrap(app, mock.clone());
        println!("mock {role} listening on {base}");
        if let Some(acceptor) = acceptor.clone() {
            let listener = tls::TlsListener {
                tcp: listener,
                acceptor,
                mock,
                name: args.tls_name.clone(),
            };
            let app = app.into_make_service_with_connect_info::<control::Peer>();
            tasks.push(tokio::spawn(
                async move { axum::serve(listener, app).await },
            ));
            continue;
        }
        // Like real APIs, no Nagle delay: a stream's small events leave as they are written.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tasks.push(tokio::spawn(
            async move { axum::serve(listener, app).await },
        ));
    }
    if tasks.is_empty() {
        eprintln!("cxgate-mocks: give at least one of --genesys, --cxone, --llm");
        std::process::exit(2);
    }
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            eprintln!("cxgate-mocks: server error: {e}");
            std::process::exit(1);
        }
    }
}
