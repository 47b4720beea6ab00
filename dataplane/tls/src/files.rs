//! Certificate and key files: the directory `mesh certs` writes and the files a node loads
//! (`--ca`, `--cert`, `--key`, `--pq-key`, SPEC §7).
//!
//! # Directory layout
//!
//! | file | contents | PEM label | mode |
//! |---|---|---|---|
//! | `ca.pem` | mesh CA certificate | `CERTIFICATE` | 0644 |
//! | `ca.key` | mesh CA ECDSA P-256 key, PKCS#8 | `PRIVATE KEY` | 0600 |
//! | `node-<id>.pem` | node certificate (leaf only; peers hold `ca.pem`) | `CERTIFICATE` | 0644 |
//! | `node-<id>.key` | node TLS ECDSA P-256 key, PKCS#8 | `PRIVATE KEY` | 0600 |
//! | `node-<id>.mldsa` | node ML-DSA-65 key, PKCS#8 seed form ([`crate::mldsa`]) | `PRIVATE KEY` | 0600 |
//!
//! `<id>` is the decimal node id. A new directory is created 0700. Nothing is ever
//! overwritten: generation checks every file it would write first and fails with
//! [`Error::AlreadyExists`] before writing anything. When `ca.pem` and `ca.key` already exist,
//! the CA is reused and only the missing nodes are added; that is how a node joins a mesh.
//! Private key files are created with mode 0600 atomically (`O_CREAT|O_EXCL` with the mode),
//! never widened after the fact, and `fsync`ed.
//!
//! Loading reads PEM and names the file in every error. Key files' permissions are not
//! enforced on load (secrets mounted by orchestrators are often 0644); the operator decides.

use std::fs;
use std::io::{self, Write as _};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::certs::{CertificateAuthority, NodeIdentity, Validity, generate_node, single_pem_block};
use crate::error::{CertProblem, Error, FileProblem};
use crate::mldsa::MldsaKeyPair;

/// File name of the CA certificate in a mesh directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in a mesh directory.
pub const CA_KEY_FILE: &str = "ca.key";

const PRIVATE_FILE_MODE: u32 = 0o600;
const PUBLIC_FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

/// A node to generate files for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node id.
    pub node_id: NonZeroU64,
    /// DNS names and IP addresses for the certificate's SANs (informational; mesh
    /// authenticates the node id only).
    pub hosts: Vec<String>,
}

/// Parameters of [`write_mesh_dir`].
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Subject CN of a newly generated CA.
    pub ca_common_name: String,
    /// Validity of a newly generated CA.
    pub ca_validity: Validity,
    /// Validity of the node certificates.
    pub node_validity: Validity,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            ca_common_name: "mesh CA".to_owned(),
            ca_validity: Validity::ca_default(),
            node_validity: Validity::node_default(),
        }
    }
}

/// What [`write_mesh_dir`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFiles {
    /// Whether a new CA was generated (`false`: an existing `ca.pem`/`ca.key` was used).
    pub ca_generated: bool,
    /// Every file written, in order.
    pub written: Vec<PathBuf>,
}

/// The paths of a mesh directory (layout in the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshDir {
    root: PathBuf,
}

impl MeshDir {
    /// The mesh directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `<root>/ca.pem`.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.root.join(CA_CERT_FILE)
    }

    /// `<root>/ca.key`.
    pub fn ca_key_path(&self) -> PathBuf {
        self.root.join(CA_KEY_FILE)
    }

    /// `<root>/node-<id>.pem`.
    pub fn node_cert_path(&self, node_id: NonZeroU64) -> PathBuf {
        self.root.join(format!("node-{node_id}.pem"))
    }

    /// `<root>/node-<id>.key`.
    pub fn node_key_path(&self, node_id: NonZeroU64) -> PathBuf {
        self.root.join(format!("node-{node_id}.key"))
    }

    /// `<root>/node-<id>.mldsa`.
    pub fn node_mldsa_path(&self, node_id: NonZeroU64) -> PathBuf {
        self.root.join(format!("node-{node_id}.mldsa"))
    }

    /// Loads node `node_id`'s identity from this directory, and checks that the certificate
    /// names that node.
    pub fn load_node_identity(&self, node_id: NonZeroU64) -> Result<NodeIdentity, Error> {
        let cert_path = self.node_cert_path(node_id);
        let identity = load_node_identity(
            &cert_path,
            &self.node_key_path(node_id),
            &self.node_mldsa_path(node_id),
        )?;
        if identity.node_id() == node_id {
            Ok(identity)
        } else {
            Err(Error::BadFile {
                path: cert_path,
                problem: FileProblem::WrongNode {
                    expected: node_id,
                    found: identity.node_id(),
                },
            })
        }
    }

    /// Loads the CA certificate (the trust anchor).
    pub fn load_ca_certificate(&self) -> Result<CertificateDer<'static>, Error> {
        load_ca_certificate(&self.ca_cert_path())
    }
}

/// Writes a mesh directory: the CA (unless it already exists there) and, for each of
/// `nodes`, its certificate, TLS key and ML-DSA-65 key. See the module docs for the layout
/// and the no-overwrite rule.
pub fn write_mesh_dir(
    dir: &Path,
    nodes: &[NodeSpec],
    options: &GenerateOptions,
) -> Result<GeneratedFiles, Error> {
    for (i, node) in nodes.iter().enumerate() {
        if nodes[..i].iter().any(|n| n.node_id == node.node_id) {
            return Err(Error::InvalidParameters(format!(
                "node id {} is listed twice",
                node.node_id
            )));
        }
    }
    create_private_dir(dir)?;
    let layout = MeshDir::new(dir);

    // Check everything before writing anything, so a refused run leaves no half-made node.
    for node in nodes {
        for path in [
            layout.node_cert_path(node.node_id),
            layout.node_key_path(node.node_id),
            layout.node_mldsa_path(node.node_id),
        ] {
            if exists(&path)? {
                return Err(Error::AlreadyExists { path });
            }
        }
    }
    let (ca_cert_path, ca_key_path) = (layout.ca_cert_path(), layout.ca_key_path());
    let mut written = Vec::new();
    let ca_generated = match (exists(&ca_cert_path)?, exists(&ca_key_path)?) {
        (true, true) => false,
        (false, false) => true,
        (cert, _) => {
            let (present, missing) = if cert {
                (&ca_cert_path, &ca_key_path)
            } else {
                (&ca_key_path, &ca_cert_path)
            };
            return Err(Error::InvalidParameters(format!(
                "{} exists but {} does not; restore it or move both away to make a new CA",
                present.display(),
                missing.display()
            )));
        }
    };
    let ca = if ca_generated {
        let ca = CertificateAuthority::generate(&options.ca_common_name, options.ca_validity)?;
        write_new_file(
            &ca_key_path,
            ca.private_key_pem().as_bytes(),
            PRIVATE_FILE_MODE,
        )?;
        written.push(ca_key_path);
        write_new_file(
            &ca_cert_path,
            ca.certificate_pem().as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        written.push(ca_cert_path);
        ca
    } else {
        load_certificate_authority(&ca_cert_path, &ca_key_path)?
    };

    for node in nodes {
        let (issued, mldsa) = generate_node(&ca, node.node_id, &node.hosts, options.node_validity)?;
        let files = [
            (
                layout.node_mldsa_path(node.node_id),
                mldsa.to_pem()?,
                PRIVATE_FILE_MODE,
            ),
            (
                layout.node_key_path(node.node_id),
                issued.private_key_pem(),
                PRIVATE_FILE_MODE,
            ),
            (
                layout.node_cert_path(node.node_id),
                issued.certificate_pem(),
                PUBLIC_FILE_MODE,
            ),
        ];
        for (path, contents, mode) in files {
            write_new_file(&path, contents.as_bytes(), mode)?;
            written.push(path);
        }
    }
    sync_dir(dir)?;
    Ok(GeneratedFiles {
        ca_generated,
        written,
    })
}

/// Loads the mesh CA certificate from a PEM file holding exactly one `CERTIFICATE`, and
/// checks that it is a CA certificate.
pub fn load_ca_certificate(path: &Path) -> Result<CertificateDer<'static>, Error> {
    let der = read_single_pem(path, "CERTIFICATE")?;
    let bad = |problem| Error::BadFile {
        path: path.to_owned(),
        problem: FileProblem::BadCertificate(problem),
    };
    let (_, x509) = X509Certificate::from_der(&der)
        .map_err(|e| bad(CertProblem::Unparseable(e.to_string())))?;
    if !x509.is_ca() {
        return Err(bad(CertProblem::NotCa));
    }
    Ok(CertificateDer::from(der))
}

/// Loads the CA certificate and private key, to issue more node certificates.
pub fn load_certificate_authority(
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertificateAuthority, Error> {
    let cert = CertificateDer::from(read_single_pem(cert_path, "CERTIFICATE")?);
    let key = read_single_pem(key_path, "PRIVATE KEY")?;
    CertificateAuthority::assemble(cert, &key, [cert_path, key_path])
}

/// Loads a node's identity from its three files (`--cert`, `--key`, `--pq-key`), checking
/// that the certificate is a mesh node certificate and that both keys belong to it.
pub fn load_node_identity(
    cert_path: &Path,
    key_path: &Path,
    mldsa_path: &Path,
) -> Result<NodeIdentity, Error> {
    let cert = CertificateDer::from(read_single_pem(cert_path, "CERTIFICATE")?);
    let key_text = read(key_path)?;
    let tls_key = PrivateKeyDer::from_pem_slice(&key_text).map_err(|e| Error::BadFile {
        path: key_path.to_owned(),
        problem: match e {
            rustls_pki_types::pem::Error::NoItemsFound => FileProblem::NoPemBlock {
                label: "PRIVATE KEY",
            },
            other => FileProblem::BadPem(other.to_string()),
        },
    })?;
    let mldsa = MldsaKeyPair::from_pem(&read(mldsa_path)?).map_err(|problem| Error::BadFile {
        path: mldsa_path.to_owned(),
        problem,
    })?;
    NodeIdentity::assemble(cert, tls_key, mldsa, [cert_path, key_path, mldsa_path])
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_single_pem(path: &Path, label: &'static str) -> Result<Vec<u8>, Error> {
    single_pem_block(&read(path)?, label).map_err(|problem| Error::BadFile {
        path: path.to_owned(),
        problem,
    })
}

fn exists(path: &Path) -> Result<bool, Error> {
    path.try_exists().map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    #[cfg(not(unix))]
    let _ = DIR_MODE;
    builder.create(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Creates `path` (failing if it exists) with `mode` from the start, writes and syncs it.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let io_err = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = opts.open(path).map_err(|source: io::Error| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            Error::AlreadyExists {
                path: path.to_owned(),
            }
        } else {
            io_err(source)
        }
    })?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).unwrap()
    }

    fn specs() -> Vec<NodeSpec> {
        vec![
            NodeSpec {
                node_id: id(1),
                hosts: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            },
            NodeSpec {
                node_id: id(2),
                hosts: vec![],
            },
        ]
    }

    #[test]
    fn files_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let out = write_mesh_dir(&dir, &specs(), &GenerateOptions::default()).unwrap();
        assert!(out.ca_generated);
        assert_eq!(out.written.len(), 2 + 2 * 3);

        let layout = MeshDir::new(&dir);
        let ca = layout.load_ca_certificate().unwrap();
        let one = layout.load_node_identity(id(1)).unwrap();
        let two = layout.load_node_identity(id(2)).unwrap();
        assert_eq!(one.node_id(), id(1));
        assert_eq!(two.node_id(), id(2));
        // The loaded ML-DSA key signs what the certificate's key verifies.
        let sig = one.mldsa().sign(b"round trip").unwrap();
        one.credentials()
            .mldsa_public_key
            .verify(b"round trip", &sig)
            .unwrap();
        // The loaded CA can issue more nodes, and they chain to the same anchor.
        let loaded_ca =
            load_certificate_authority(&layout.ca_cert_path(), &layout.ca_key_path()).unwrap();
        assert_eq!(loaded_ca.certificate(), &ca);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(layout.ca_key_path()), 0o600);
            assert_eq!(mode(layout.node_key_path(id(1))), 0o600);
            assert_eq!(mode(layout.node_mldsa_path(id(1))), 0o600);
            assert_eq!(mode(dir.clone()), 0o700);
        }
    }

    #[test]
    fn existing_ca_is_reused_and_nothing_is_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_mesh_dir(dir, &specs()[..1], &GenerateOptions::default()).unwrap();
        let ca_before = fs::read(dir.join(CA_CERT_FILE)).unwrap();

        let out = write_mesh_dir(dir, &specs()[1..], &GenerateOptions::default()).unwrap();
        assert!(!out.ca_generated);
        assert_eq!(out.written.len(), 3);
        assert_eq!(fs::read(dir.join(CA_CERT_FILE)).unwrap(), ca_before);
        MeshDir::new(dir).load_node_identity(id(2)).unwrap();

        let err = write_mesh_dir(dir, &specs()[..1], &GenerateOptions::default()).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { ref path } if path.ends_with("node-1.pem")));

        let dup = vec![specs()[0].clone(), specs()[0].clone()];
        let fresh = tmp.path().join("dup");
        assert!(matches!(
            write_mesh_dir(&fresh, &dup, &GenerateOptions::default()),
            Err(Error::InvalidParameters(_))
        ));
    }

    #[test]
    fn load_errors_name_the_file_and_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_mesh_dir(dir, &specs(), &GenerateOptions::default()).unwrap();
        let layout = MeshDir::new(dir);

        // Missing file.
        let missing = dir.join("nope.pem");
        let err = load_ca_certificate(&missing).unwrap_err();
        assert!(matches!(err, Error::Io { ref path, .. } if path == &missing));
        assert!(err.to_string().contains("nope.pem"));

        // A node certificate is not a CA.
        let err = load_ca_certificate(&layout.node_cert_path(id(1))).unwrap_err();
        assert!(matches!(
            err,
            Error::BadFile {
                problem: FileProblem::BadCertificate(CertProblem::NotCa),
                ..
            }
        ));

        // A key file where a certificate is expected.
        let err = load_ca_certificate(&layout.ca_key_path()).unwrap_err();
        assert!(matches!(
            err,
            Error::BadFile {
                problem: FileProblem::NoPemBlock {
                    label: "CERTIFICATE"
                },
                ..
            }
        ));

        // The TLS key given as the ML-DSA key.
        let err = load_node_identity(
            &layout.node_cert_path(id(1)),
            &layout.node_key_path(id(1)),
            &layout.node_key_path(id(1)),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::BadFile { ref path, problem: FileProblem::BadKey(_) }
                if path == &layout.node_key_path(id(1))),
            "{err}"
        );

        // Node 2's keys with node 1's certificate.
        let err = load_node_identity(
            &layout.node_cert_path(id(1)),
            &layout.node_key_path(id(1)),
            &layout.node_mldsa_path(id(2)),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::KeyMismatch {
                    kind: "ML-DSA-65",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("node-2.mldsa"), "{err}");
        let err = load_node_identity(
            &layout.node_cert_path(id(1)),
            &layout.node_key_path(id(2)),
            &layout.node_mldsa_path(id(1)),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::KeyMismatch { kind: "TLS", .. }),
            "{err}"
        );

        // Garbage PEM.
        let junk = dir.join("junk.pem");
        fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(
            load_ca_certificate(&junk),
            Err(Error::BadFile {
                problem: FileProblem::BadPem(_),
                ..
            })
        ));

        // The CA key must belong to the CA certificate.
        let err = load_certificate_authority(&layout.ca_cert_path(), &layout.node_key_path(id(1)))
            .unwrap_err();
        assert!(
            matches!(err, Error::KeyMismatch { kind: "CA", ref key_path, .. }
                if key_path == &layout.node_key_path(id(1))),
            "{err}"
        );
        // A node's files under another node's name.
        fs::copy(layout.node_cert_path(id(2)), layout.node_cert_path(id(3))).unwrap();
        fs::copy(layout.node_key_path(id(2)), layout.node_key_path(id(3))).unwrap();
        fs::copy(layout.node_mldsa_path(id(2)), layout.node_mldsa_path(id(3))).unwrap();
        let err = layout.load_node_identity(id(3)).unwrap_err();
        assert!(
            matches!(err, Error::BadFile { problem: FileProblem::WrongNode { expected, found }, .. }
                if expected == id(3) && found == id(2)),
            "{err}"
        );
    }
}
