//! Signing keys made at test time with the openssl CLI, and signatures made
//! exactly the way a bundle producer makes them.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use tempfile::TempDir;

use super::tools;

/// The key types a producer may sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// ECDSA P-256, what cosign generates (Artifact Studio's keys).
    EcP256,
    EcP384,
    Rsa2048,
    /// Slow to generate (about a second, sometimes more).
    Rsa4096,
    Ed25519,
}

impl KeyKind {
    pub const ALL: [KeyKind; 5] = [
        KeyKind::EcP256,
        KeyKind::EcP384,
        KeyKind::Rsa2048,
        KeyKind::Rsa4096,
        KeyKind::Ed25519,
    ];

    fn genpkey_args(self) -> &'static [&'static str] {
        match self {
            KeyKind::EcP256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyKind::EcP384 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            KeyKind::Rsa2048 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            KeyKind::Rsa4096 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
            KeyKind::Ed25519 => &["-algorithm", "ED25519"],
        }
    }
}

/// A key pair in a temporary directory: PKCS#8 private key and SPKI public
/// key, both PEM (`BEGIN PRIVATE KEY` / `BEGIN PUBLIC KEY`).
pub struct TestKey {
    dir: TempDir,
    kind: KeyKind,
    private: PathBuf,
    public: PathBuf,
}

impl TestKey {
    pub fn generate(kind: KeyKind) -> TestKey {
        let dir = tempfile::Builder::new()
            .prefix("airlock-key-")
            .tempdir()
            .expect("create a temporary directory for a test key");
        let private = dir.path().join("private.pem");
        let public = dir.path().join("public.pem");
        tools::run(
            tools::command("openssl")
                .arg("genpkey")
                .args(kind.genpkey_args())
                .arg("-out")
                .arg(&private),
            &format!("generate a {kind:?} test key with openssl genpkey"),
        );
        tools::run(
            tools::command("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&private)
                .arg("-out")
                .arg(&public),
            &format!("extract the public half of a {kind:?} test key with openssl pkey"),
        );
        TestKey {
            dir,
            kind,
            private,
            public,
        }
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// PKCS#8 PEM private key.
    pub fn private_pem(&self) -> &Path {
        &self.private
    }

    /// SPKI PEM public key, what airlock is configured with.
    pub fn public_pem(&self) -> &Path {
        &self.public
    }

    /// Signs `file` into `sig_out` the way producers do: `openssl dgst -sha256
    /// -sign KEY -out SIG FILE` (DER ECDSA, PKCS#1 v1.5 for RSA); for Ed25519
    /// `openssl pkeyutl -sign -rawin` (pure Ed25519 over the whole file).
    pub fn sign(&self, file: &Path, sig_out: &Path) {
        let mut cmd = tools::command("openssl");
        match self.kind {
            KeyKind::Ed25519 => {
                cmd.args(["pkeyutl", "-sign", "-rawin", "-inkey"])
                    .arg(&self.private)
                    .arg("-in")
                    .arg(file)
                    .arg("-out")
                    .arg(sig_out);
            }
            _ => {
                cmd.args(["dgst", "-sha256", "-sign"])
                    .arg(&self.private)
                    .arg("-out")
                    .arg(sig_out)
                    .arg(file);
            }
        }
        tools::run(
            &mut cmd,
            &format!("sign {} with a {:?} test key", file.display(), self.kind),
        );
    }

    /// Signs like [`TestKey::sign`], then writes the signature base64-encoded,
    /// as `cosign sign-blob --key` prints it.
    pub fn sign_base64(&self, file: &Path, sig_out: &Path) {
        self.sign(file, sig_out);
        let der = fs::read(sig_out).expect("read the signature just written");
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        fs::write(sig_out, text).expect("write the base64 signature");
    }

    /// Whether openssl accepts `sig` for `file` with this key's public half
    /// (`openssl dgst -sha256 -verify`, Artifact Studio's documented check;
    /// `pkeyutl -verify -rawin` for Ed25519).
    pub fn openssl_verifies(&self, file: &Path, sig: &Path) -> bool {
        openssl_verifies(self.kind, &self.public, file, sig)
    }

    /// The temporary directory holding the key files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `openssl dgst -sha256 -verify PUBLIC -signature SIG FILE` (or the Ed25519
/// equivalent): whether openssl accepts the signature.
pub fn openssl_verifies(kind: KeyKind, public_pem: &Path, file: &Path, sig: &Path) -> bool {
    let mut cmd = tools::command("openssl");
    match kind {
        KeyKind::Ed25519 => {
            cmd.args(["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey"])
                .arg(public_pem)
                .arg("-in")
                .arg(file)
                .arg("-sigfile")
                .arg(sig);
        }
        _ => {
            cmd.args(["dgst", "-sha256", "-verify"])
                .arg(public_pem)
                .arg("-signature")
                .arg(sig)
                .arg(file);
        }
    }
    tools::output(&mut cmd, "verify a signature with openssl")
        .status
        .success()
}
