//! `keygate dev`: the simulator as upstream and keygate in front of it, in one command.
//!
//! Binds the simulator on a loopback ephemeral port, starts keygate with the embedded dev config
//! (`dev/keygate.toml`) pointed at it, and prints a banner with the demo credentials and curl
//! commands that work as printed. Stops on SIGTERM/SIGINT. The simulator writes absolute links
//! to its own address, as Confluent writes `https://api.confluent.cloud`, and keygate rewrites
//! them to its own (`listener.public_url`), so dev mode behaves like production.
//!
//! Everything it needs is embedded in the binary — the config, the demo org, the matrix, the
//! schema and the example policies — so it works from any directory: the policy files are written
//! to a fresh directory under the system's temporary directory (edit them there and keygate
//! reloads them), next to the audit trail.
//!
//! Egress mode too: a throwaway dev CA is made for the run (its certificate is written next to
//! the audit trail, for `SSL_CERT_FILE` and `curl --cacert`), the egress listener intercepts
//! `api.confluent.cloud` with a leaf from it, and `confluent.cloud` (logins, `/api/me`) is
//! tunnelled to the simulator, which serves it over TLS with a leaf from the same CA. The banner
//! prints the lines to paste and a curl through the proxy.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::audit::FileMode;
use crate::config::{AuditFile, Config, ConfigError};
use crate::egress::config::CertSource;
use crate::simulator::{self, Seed, Simulator};

/// The dev config, embedded so `keygate dev` works from any directory.
pub const DEV_CONFIG: &str = include_str!("../dev/keygate.toml");

/// The demo principal whose key the banner's curl commands use: EnvironmentAdmin on prod and
/// ResourceOwner on `sa-orders`, so its create for `sa-orders` is allowed.
const BANNER_PRINCIPAL: &str = "u-bob";
/// The demo service account whose key is keygate's own credential in dev mode.
const KEYGATE_PRINCIPAL: &str = "sa-keygate";
/// The variable the embedded dev config reads keygate's credential from.
const DEV_CREDENTIAL_VAR: &str = "KEYGATE_DEV_CREDENTIAL";
/// A seeded key the banner's delete command removes.
const BANNER_DELETE_KEY: &str = "DEMOORDERS000001";

/// The RBAC matrix `keygate dev` decides with (the shipped one).
const DEV_MATRIX: (&str, &str) = ("matrix.toml", include_str!("../policies/matrix.toml"));

/// The organisation-policy files `keygate dev` loads: the shipped schema and example set. A test
/// checks this list against the `*.cedar` files in `policies/`.
pub const DEV_POLICY_FILES: [(&str, &str); 6] = [
    (
        "keygate.cedarschema",
        include_str!("../policies/keygate.cedarschema"),
    ),
    ("naming.cedar", include_str!("../policies/naming.cedar")),
    ("platform.cedar", include_str!("../policies/platform.cedar")),
    (
        "production.cedar",
        include_str!("../policies/production.cedar"),
    ),
    (
        "protected.cedar",
        include_str!("../policies/protected.cedar"),
    ),
    (
        "service-accounts.cedar",
        include_str!("../policies/service-accounts.cedar"),
    ),
];

/// Options of `keygate dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// keygate's listener.
    pub listen: SocketAddr,
    /// keygate's admin listener.
    pub admin_listen: SocketAddr,
    /// keygate's egress (forward proxy) listener.
    pub egress_listen: SocketAddr,
}

/// Why `keygate dev` could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The embedded config is invalid (a build defect).
    #[error("embedded dev config: {0}")]
    Config(#[from] ConfigError),
    /// A listener could not be bound, or keygate did not start.
    #[error(transparent)]
    Start(#[from] crate::StartError),
    /// The simulator's listener could not be bound.
    #[error("simulator: {0}")]
    Io(#[from] std::io::Error),
    /// The embedded policy files could not be written out.
    #[error("cannot write the dev policy files to `{}`: {source}", .dir.display())]
    Files {
        /// The directory.
        dir: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Trace export could not start.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TraceError),
    /// The dev CA or the simulator's certificate could not be made.
    #[error("dev certificates: {0}")]
    Certs(String),
}

/// Runs `keygate dev` until a signal.
pub async fn run(options: DevOptions) -> Result<(), DevError> {
    let sim = Arc::new(Simulator::new(Seed::builtin()));
    let sim_listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let sim_addr = sim_listener.local_addr()?;
    let (stop_sim, sim_stopped) = tokio::sync::oneshot::channel::<()>();
    let sim_task = tokio::spawn(simulator::serve(sim_listener, sim.clone(), None, async {
        let _ = sim_stopped.await;
    }));

    let own = sim
        .demo_keys()
        .into_iter()
        .find(|k| k.principal_id == KEYGATE_PRINCIPAL)
        .map(|k| format!("{}:{}", k.key_id, k.secret))
        .unwrap_or_default();
    let env = HashMap::from([(DEV_CREDENTIAL_VAR.to_string(), own)]);
    let mut config = Config::from_toml_with_env(DEV_CONFIG, &env)?;
    let dir = DevDir(std::env::temp_dir().join(format!("keygate-dev-{}", std::process::id())));
    let policies =
        write_policy_files(&dir.0.join("policies")).map_err(|source| DevError::Files {
            dir: dir.0.clone(),
            source,
        })?;
    use_policy_files(&mut config, &policies);
    let ca = dev_ca(&dir.0)?;
    // The simulator also plays `confluent.cloud`, over TLS, at the far end of the egress tunnel.
    let web = crate::egress::certs::InterceptCerts::load(
        &ca,
        &[crate::egress::config::Target {
            host: WEB_HOST.to_owned(),
            port: 443,
        }],
    )
    .map_err(|e| DevError::Certs(e.to_string()))?;
    let web_tls = web
        .get(WEB_HOST)
        .cloned()
        .ok_or_else(|| DevError::Certs("no certificate for the web host".into()))?;
    let web_listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let web_addr = web_listener.local_addr()?;
    let (stop_web, web_stopped) = tokio::sync::oneshot::channel::<()>();
    let web_task = tokio::spawn(simulator::serve(
        web_listener,
        sim.clone(),
        Some(web_tls),
        async {
            let _ = web_stopped.await;
        },
    ));
    config.egress = Some(dev_egress(&ca, options.egress_listen, web_addr)?);
    let audit_path = dir.0.join("audit.jsonl");
    config.audit.file = Some(AuditFile {
        path: audit_path.clone(),
        mode: FileMode::Blocking,
        max_bytes: 64 * 1024 * 1024,
    });
    config.listener.address = options.listen;
    config.admin.address = options.admin_listen;
    // A fixed address is the public URL; with port 0 links follow each request's `Host`.
    if options.listen.port() != 0 && !options.listen.ip().is_unspecified() {
        config.listener.public_url = format!("http://{}", options.listen).parse().ok();
    }
    config.upstream.url = format!("http://{sim_addr}")
        .parse()
        .map_err(|_| ConfigError::field("upstream.url", "invalid simulator address"))?;
    // Session tokens are resolved where they were issued: the simulator.
    config.upstream.web_url = config.upstream.url.clone();
    let telemetry = crate::telemetry::init_logging(&config.log, &config.telemetry)?;
    let gateway = crate::build(config).await?;
    let base = format!("http://{}", gateway.local_addr());
    sim.set_public_base(&format!("http://{sim_addr}"));
    println!("{}", banner(&sim, &base, gateway.admin_addr(), sim_addr));
    if let (Some(proxy), CertSource::Ca { cert, .. }) = (gateway.egress_addr(), &ca) {
        println!("{}", egress_banner(&sim, proxy, cert));
    }
    println!(
        "Audit trail: {} (check it with `keygate audit verify`)",
        audit_path.display()
    );
    println!(
        "Policies:    {} (copies of the shipped set; edit them there and keygate reloads them)",
        policies.display()
    );
    println!(
        "Both are removed when keygate dev stops: {}",
        dir.0.display()
    );

    gateway.run_until_signal().await;
    telemetry.shutdown().await;
    let _ = stop_sim.send(());
    let _ = stop_web.send(());
    let _ = sim_task.await;
    let _ = web_task.await;
    Ok(())
}

/// Confluent's web host, which the dev simulator also plays.
const WEB_HOST: &str = "confluent.cloud";
/// The demo user whose login the egress banner shows.
const BANNER_LOGIN: (&str, &str) = ("bob@example.com", "bob-demo-password");

/// Makes the run's throwaway CA in `dir`.
fn dev_ca(dir: &std::path::Path) -> Result<CertSource, DevError> {
    let (cert, key) =
        crate::egress::certs::generate_ca("keygate dev CA (throwaway, this run only)")
            .map_err(|e| DevError::Certs(e.to_string()))?;
    let files = |name: &str, text: &str| -> Result<std::path::PathBuf, DevError> {
        let path = dir.join(name);
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|source| DevError::Files {
                dir: dir.to_path_buf(),
                source,
            })?;
        Ok(path)
    };
    Ok(CertSource::Ca {
        cert: files("egress-ca.pem", &cert)?,
        key: files("egress-ca.key", &key)?,
    })
}

/// The dev egress section: intercept the API host, tunnel the web host to the simulator's TLS
/// listener (a loopback address, allowed explicitly).
fn dev_egress(
    ca: &CertSource,
    listen: SocketAddr,
    web: SocketAddr,
) -> Result<crate::egress::config::EgressConfig, DevError> {
    let CertSource::Ca { cert, key } = ca else {
        return Err(DevError::Certs("the dev CA is missing".into()));
    };
    let text = format!(
        "address = \"{listen}\"\nca_cert = {:?}\nca_key = {:?}\nallow_destinations = [\"{}\"]\n\
         [connect_to]\n\"{WEB_HOST}:443\" = \"{web}\"\n",
        cert.display().to_string(),
        key.display().to_string(),
        web.ip(),
    );
    let raw: crate::egress::config::RawEgressConfig =
        toml::from_str(&text).map_err(|e| DevError::Certs(e.to_string()))?;
    crate::egress::config::EgressConfig::validate(raw, std::path::Path::new(""))
        .map_err(|e| DevError::Config(ConfigError::field(e.field, e.message)))
}

/// The egress part of the banner: what to paste, and a curl through the proxy that works as
/// printed.
pub fn egress_banner(sim: &Simulator, proxy: SocketAddr, ca: &std::path::Path) -> String {
    let ca = ca.display();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Egress mode (clients that honour HTTPS_PROXY, such as the Confluent CLI): paste"
    );
    let _ = writeln!(out, "  export HTTPS_PROXY=http://{proxy}");
    let _ = writeln!(out, "  export SSL_CERT_FILE={ca}");
    let _ = writeln!(
        out,
        "api.confluent.cloud is intercepted (decided here), confluent.cloud is tunnelled to the simulator."
    );
    if let Some(key) = sim
        .demo_keys()
        .iter()
        .find(|k| k.principal_id == BANNER_PRINCIPAL)
    {
        let _ = writeln!(out, "Try it through the proxy (as {BANNER_PRINCIPAL}):");
        let _ = writeln!(
            out,
            "  curl -sS -i --proxy http://{proxy} --cacert {ca} -u '{}:{}' https://api.confluent.cloud/iam/v2/api-keys",
            key.key_id, key.secret
        );
    }
    let (email, password) = BANNER_LOGIN;
    let _ = writeln!(
        out,
        "  curl -sS -i --proxy http://{proxy} --cacert {ca} -H 'Content-Type: application/json' -d '{{\"email\":\"{email}\",\"password\":\"{password}\"}}' https://confluent.cloud/api/sessions"
    );
    let _ = writeln!(
        out,
        "  (a session login as `confluent login` does; send its `token` as `Authorization: Bearer …`)"
    );
    out
}

/// The directory of one `keygate dev` run (policy copies and the demo's audit trail), removed
/// when the run ends, however it ends short of being killed.
struct DevDir(std::path::PathBuf);

impl Drop for DevDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the embedded matrix, schema and policies into `dir` (created), returning it.
pub fn write_policy_files(dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in std::iter::once(DEV_MATRIX).chain(DEV_POLICY_FILES) {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(dir.to_path_buf())
}

/// Points `config` at policy files written by [`write_policy_files`] into `dir`.
pub fn use_policy_files(config: &mut Config, dir: &std::path::Path) {
    config.authz.matrix = dir.join(DEV_MATRIX.0);
    if let Some(policy) = config.policy.as_mut() {
        policy.dir = dir.to_path_buf();
        policy.schema = None;
    }
}

/// The banner: addresses, demo credentials, and three curl commands that work as printed.
pub fn banner(sim: &Simulator, base: &str, admin: SocketAddr, sim_addr: SocketAddr) -> String {
    let keys = sim.demo_keys();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "keygate dev: a policy gateway in front of a simulated Confluent Cloud"
    );
    let _ = writeln!(out, "  gateway:   {base}");
    let _ = writeln!(
        out,
        "  admin:     http://{admin}/metrics  /healthz  /readyz"
    );
    let _ = writeln!(
        out,
        "  upstream:  Confluent IAM simulator at http://{sim_addr} (org {})",
        sim.org_id()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Demo principals (API key as KEY:SECRET; see README.md for their roles):"
    );
    for key in &keys {
        let _ = writeln!(
            out,
            "  {:<12} {:<18} {}:{}",
            key.principal_id, key.display_name, key.key_id, key.secret
        );
    }
    if let Some(key) = keys.iter().find(|k| k.principal_id == BANNER_PRINCIPAL) {
        let auth = format!("{}:{}", key.key_id, key.secret);
        let _ = writeln!(out);
        let _ = writeln!(out, "Try it (as {BANNER_PRINCIPAL}):");
        let _ = writeln!(
            out,
            "  curl -sS -i -u '{auth}' -H 'Content-Type: application/json' -d '{{\"spec\":{{\"display_name\":\"orders-producer-prod\",\"description\":\"OPS-123 orders producer\",\"owner\":{{\"id\":\"sa-orders\"}},\"resource\":{{\"id\":\"lkc-prod01\"}}}}}}' {base}/iam/v2/api-keys"
        );
        let _ = writeln!(
            out,
            "  curl -sS -i -u '{auth}' '{base}/iam/v2/api-keys?spec.owner=sa-orders'"
        );
        let _ = writeln!(
            out,
            "  curl -sS -i -u '{auth}' -X DELETE {base}/iam/v2/api-keys/{BANNER_DELETE_KEY}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn every_shipped_policy_file_is_embedded() {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut on_disk: Vec<String> = std::fs::read_dir(&shipped)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cedar") || n.ends_with(".cedarschema"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = DEV_POLICY_FILES
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn the_dev_config_loads_the_embedded_files_from_any_directory() {
        let dir = tempfile::tempdir().unwrap();
        let env = HashMap::from([(DEV_CREDENTIAL_VAR.to_string(), "K:S".to_string())]);
        let mut config = Config::from_toml_with_env(DEV_CONFIG, &env).unwrap();
        let policies = write_policy_files(&dir.path().join("policies")).unwrap();
        use_policy_files(&mut config, &policies);
        // Nothing relative is left: the working directory does not matter.
        assert!(config.authz.matrix.is_absolute());
        let loaded = crate::tools::preflight(&config).unwrap();
        assert_eq!(
            loaded.authz.org.unwrap().policy_ids().len(),
            11,
            "the example set"
        );
    }
}
