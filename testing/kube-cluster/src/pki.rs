//! The cluster's certificates, generated at each start: one CA that signs every serving and
//! client certificate (API server, kubelet, admin, controller-manager, scheduler, node), and
//! the key pair that signs service-account tokens. Clients therefore meet real TLS with a
//! pinned CA and real X.509 identities (CN = user, O = groups), as kubeadm sets them up.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its private key, PEM-encoded, and where both were written.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The certificate authority of one cluster.
pub struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    /// Generates a fresh CA in `dir` (`ca.crt`, `ca.key`).
    pub fn generate(dir: &Path) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let params = ca_params()?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca_pem = cert.pem();
        write_private(&dir.join("ca.key"), &key.serialize_pem())?;
        std::fs::write(dir.join("ca.crt"), &ca_pem)?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca: Issuer::new(params, key),
            ca_pem,
        })
    }

    /// The CA a running cluster wrote into `dir`, to issue more certificates from it (a test's
    /// fault proxy needs a serving certificate clients trust).
    pub fn load(dir: &Path) -> anyhow::Result<Pki> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
        };
        let key = KeyPair::from_pem(&read("ca.key")?)?;
        // Signing needs only the issuer's name and key: the same parameters as at generation.
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca: Issuer::new(ca_params()?, key),
            ca_pem: read("ca.crt")?,
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A serving certificate for loopback (`127.0.0.1`, `localhost`) and the given extra DNS
    /// names, written as `<name>.crt` / `<name>.key`.
    pub fn server(&self, name: &str, dns_names: &[&str]) -> anyhow::Result<Identity> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into()?),
        ];
        for dns in dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName((*dns).try_into()?));
        }
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(name, params)
    }

    /// A client certificate for user `user` in `groups` (CN and O, as the API server reads
    /// them), written as `<name>.crt` / `<name>.key`.
    pub fn client(&self, name: &str, user: &str, groups: &[&str]) -> anyhow::Result<Identity> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(name, params)
    }

    fn issue(&self, name: &str, mut params: CertificateParams) -> anyhow::Result<Identity> {
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let identity = Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_file: self.dir.join(format!("{name}.crt")),
            key_file: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&identity.cert_file, &identity.cert_pem)?;
        write_private(&identity.key_file, &identity.key_pem)?;
        Ok(identity)
    }

    /// The key pair that signs service-account tokens (`sa.key`, `sa.pub`).
    pub fn service_account_keys(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate()?;
        let private = self.dir.join("sa.key");
        let public = self.dir.join("sa.pub");
        write_private(&private, &key.serialize_pem())?;
        std::fs::write(&public, key.public_key_pem())?;
        Ok((private, public))
    }
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "ferry test cluster CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    Ok(params)
}

fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(pem.as_bytes())?;
    Ok(())
}
