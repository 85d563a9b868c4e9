//! Test certificates from Debian's `openssl`, made at test time (none is checked in): a CA, a
//! server certificate it signs for `localhost`, and a second CA that signed nothing the mocks
//! serve (a gateway trusting only it must refuse them).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pki {
    /// The CA that signed the mocks' certificate (PEM).
    pub ca: PathBuf,
    /// A CA unrelated to the mocks' certificate.
    pub other_ca: PathBuf,
    /// The mocks' certificate chain and key (PEM), for the name `localhost`.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The name in the mocks' certificate, and the host the rendered config sends SNI for.
pub const TLS_NAME: &str = "localhost";

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl (Debian package openssl): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn self_signed_ca(dir: &Path, name: &str) -> Result<(), String> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )
}

impl Pki {
    /// Writes everything into `dir` (created).
    pub fn create(dir: &Path) -> Result<Pki, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        self_signed_ca(dir, "cxgate-test-ca")?;
        self_signed_ca(dir, "cxgate-other-ca")?;
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={TLS_NAME}"),
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        )?;
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            format!(
                "subjectAltName=DNS:{TLS_NAME}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "cxgate-test-ca.pem",
                "-CAkey",
                "cxgate-test-ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        )?;
        Ok(Pki {
            ca: dir.join("cxgate-test-ca.pem"),
            other_ca: dir.join("cxgate-other-ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        })
    }

    /// The mocks' arguments to serve HTTPS with this certificate.
    pub fn mock_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
            "--tls-name".into(),
            TLS_NAME.into(),
        ]
    }
}
