//! The `[egress]` config section: the file's shape ([`RawEgressConfig`]) and its validated form
//! ([`EgressConfig`]). Off unless the section is present.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The hosts whose TLS keygate terminates by default: the Cloud API the CLI's `/iam/v2` calls go to.
pub const DEFAULT_INTERCEPT: &[&str] = &["api.confluent.cloud:443"];
/// The hosts tunnelled by default: Confluent's web host (`/api/sessions` carries passwords and
/// refresh tokens) and its SSO host. They are never decrypted.
pub const DEFAULT_TUNNEL: &[&str] = &["confluent.cloud:443", "login.confluent.io:443"];
/// A reachable Confluent host answers a TCP connect in well under a second.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A tunnel with no byte in either direction for this long is closed: the CLI's own HTTP client
/// drops idle connections after 90 s, so a live tunnel is never cut.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// `[egress]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEgressConfig {
    pub address: Option<String>,
    pub intercept: Option<Vec<String>>,
    pub tunnel: Option<Vec<String>>,
    pub ca_cert: Option<String>,
    pub ca_key: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub connect_timeout: Option<String>,
    pub tunnel_idle_timeout: Option<String>,
    pub allow_destinations: Option<Vec<String>>,
    pub connect_to: Option<HashMap<String, String>>,
    pub max_connections: Option<usize>,
    pub proxy_auth: Option<String>,
}

/// The validated `[egress]` section.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Where the forward proxy listens.
    pub address: SocketAddr,
    /// `host:port` targets whose TLS keygate terminates (lower case).
    pub intercept: Vec<Target>,
    /// `host:port` targets tunnelled byte for byte (lower case).
    pub tunnel: Vec<Target>,
    /// How intercepted connections get their certificate.
    pub certs: CertSource,
    /// TCP connect deadline for tunnels.
    pub connect_timeout: Duration,
    /// A tunnel idle this long in both directions is closed.
    pub tunnel_idle_timeout: Duration,
    /// Networks a tunnel may reach although they are loopback, private, link-local or unspecified.
    pub allow_destinations: Vec<Network>,
    /// Tunnel targets connected to another address than their name resolves to.
    pub connect_to: HashMap<Target, String>,
    /// Connections held at most (`None`: the listener's default).
    pub max_connections: Option<NonZeroUsize>,
    /// Proxy authentication (`Proxy-Authorization: Basic`), if required.
    pub proxy_auth: Option<ProxyAuthSource>,
}

/// Where proxy credentials are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyAuthSource {
    /// The static key directory of `identity.directory`.
    IdentityDirectory,
    /// A file in the directory format (id, workload principal, salted secret hash).
    File(PathBuf),
}

/// Certificates for intercepted hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// The operator's CA: a leaf per intercepted host is minted at start-up (its own key).
    Ca {
        /// CA certificate (PEM).
        cert: PathBuf,
        /// CA private key (PEM).
        key: PathBuf,
    },
    /// A ready leaf (PEM chain and key) that must cover every intercepted host.
    Leaf {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
}

/// A CONNECT target, `host:port`, host in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The host name (or IP literal, without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Target {
    /// Parses `host:port` (`[v6]:port` for IPv6 literals); the host is lower-cased.
    pub fn parse(text: &str) -> Option<Target> {
        let (host, port) = text.rsplit_once(':')?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
        let host = match host.strip_prefix('[') {
            Some(v6) => {
                let v6 = v6.strip_suffix(']')?;
                v6.parse::<std::net::Ipv6Addr>().ok()?;
                v6
            }
            None => host,
        };
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
        valid.then(|| Target {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// An IP network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `a.b.c.d/n`, `v6/n`, or a single address (a /32 or /128).
    pub fn parse(text: &str) -> Option<Network> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address.parse::<IpAddr>().ok()?, prefix.parse().ok()?),
            None => {
                let address: IpAddr = text.parse().ok()?;
                let full = if address.is_ipv4() { 32 } else { 128 };
                (address, full)
            }
        };
        let max = if address.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Network { address, prefix })
    }

    /// Whether `ip` is inside the network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `ip`, with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

// === validate ===

/// A problem with one field of `[egress]`: the config reports it with the file it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path (`egress.address`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl EgressConfig {
    /// Validates `[egress]`; relative paths resolve against `base`.
    pub fn validate(raw: RawEgressConfig, base: &Path) -> Result<EgressConfig, FieldError> {
        let address = raw.address.as_deref().ok_or_else(|| {
            FieldError::new(
                "egress.address",
                "required: where the forward proxy listens, e.g. `127.0.0.1:3128`",
            )
        })?;
        let address: SocketAddr = address
            .parse()
            .map_err(|e| FieldError::new("egress.address", format!("`{address}`: {e}")))?;
        let targets = |field: &str, list: Option<Vec<String>>, default: &[&str]| {
            let list = list.unwrap_or_else(|| default.iter().map(|s| (*s).to_owned()).collect());
            list.iter()
                .map(|t| {
                    Target::parse(t)
                        .ok_or_else(|| FieldError::new(field, format!("`{t}` is not `host:port`")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let intercept = targets("egress.intercept", raw.intercept, DEFAULT_INTERCEPT)?;
        let tunnel = targets("egress.tunnel", raw.tunnel, DEFAULT_TUNNEL)?;
        if let Some(both) = intercept.iter().find(|t| tunnel.contains(t)) {
            return Err(FieldError::new(
                "egress.tunnel",
                format!("`{both}` is also intercepted: a host is either decrypted or tunnelled"),
            ));
        }
        if let Some(ip) = intercept.iter().find(|t| t.host.parse::<IpAddr>().is_ok()) {
            return Err(FieldError::new(
                "egress.intercept",
                format!("`{ip}`: intercepted hosts are names (clients send them as SNI)"),
            ));
        }
        let path = |field: &str, value: &str| -> Result<PathBuf, FieldError> {
            if value.is_empty() {
                return Err(FieldError::new(field, "must not be empty"));
            }
            Ok(base.join(value))
        };
        let certs = match (raw.ca_cert, raw.ca_key, raw.cert, raw.key) {
            (Some(cert), Some(key), None, None) => CertSource::Ca {
                cert: path("egress.ca_cert", &cert)?,
                key: path("egress.ca_key", &key)?,
            },
            (None, None, Some(cert), Some(key)) => CertSource::Leaf {
                cert: path("egress.cert", &cert)?,
                key: path("egress.key", &key)?,
            },
            (None, None, None, None) => {
                return Err(FieldError::new(
                    "egress.ca_cert",
                    "intercepting needs a certificate: set `ca_cert` and `ca_key` (keygate mints a leaf per intercepted host) or `cert` and `key` (a ready leaf)",
                ))
            }
            _ => {
                return Err(FieldError::new(
                    "egress",
                    "set either `ca_cert` and `ca_key`, or `cert` and `key`",
                ))
            }
        };
        let duration = |field: &str, value: Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => match humantime::parse_duration(&text) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(FieldError::new(field, "must be greater than zero")),
                Err(e) => Err(FieldError::new(field, format!("`{text}`: {e}"))),
            },
        };
        let allow_destinations = raw
            .allow_destinations
            .unwrap_or_default()
            .iter()
            .map(|n| {
                Network::parse(n).ok_or_else(|| {
                    FieldError::new(
                        "egress.allow_destinations",
                        format!("`{n}` is not an address or `address/prefix`"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let mut connect_to = HashMap::new();
        for (target, to) in raw.connect_to.unwrap_or_default() {
            let field = format!("egress.connect_to.{target}");
            let parsed = Target::parse(&target)
                .ok_or_else(|| FieldError::new(&field, "the key must be `host:port`"))?;
            if !tunnel.contains(&parsed) {
                return Err(FieldError::new(
                    &field,
                    "only tunnelled hosts can be connected elsewhere",
                ));
            }
            if Target::parse(&to).is_none() {
                return Err(FieldError::new(
                    &field,
                    format!("`{to}` is not `host:port`"),
                ));
            }
            connect_to.insert(parsed, to);
        }
        let max_connections = match raw.max_connections {
            None => None,
            Some(n) => Some(NonZeroUsize::new(n).ok_or_else(|| {
                FieldError::new("egress.max_connections", "must be greater than 0")
            })?),
        };
        let proxy_auth = match raw.proxy_auth.as_deref() {
            None => None,
            Some("directory") => Some(ProxyAuthSource::IdentityDirectory),
            Some(file) => Some(ProxyAuthSource::File(path("egress.proxy_auth", file)?)),
        };
        Ok(EgressConfig {
            address,
            intercept,
            tunnel,
            certs,
            connect_timeout: duration(
                "egress.connect_timeout",
                raw.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            tunnel_idle_timeout: duration(
                "egress.tunnel_idle_timeout",
                raw.tunnel_idle_timeout,
                DEFAULT_TUNNEL_IDLE_TIMEOUT,
            )?,
            allow_destinations,
            connect_to,
            max_connections,
            proxy_auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawEgressConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_intercept_the_api_and_tunnel_the_web_and_sso_hosts() {
        let config = EgressConfig::validate(
            raw("address = \"127.0.0.1:0\"\nca_cert = \"ca.pem\"\nca_key = \"ca.key\"\n"),
            Path::new("/etc/keygate"),
        )
        .unwrap();
        assert_eq!(
            config.intercept,
            vec![Target::parse("api.confluent.cloud:443").unwrap()]
        );
        assert_eq!(config.tunnel.len(), 2);
        assert_eq!(
            config.certs,
            CertSource::Ca {
                cert: "/etc/keygate/ca.pem".into(),
                key: "/etc/keygate/ca.key".into()
            }
        );
    }

    #[test]
    fn a_host_both_intercepted_and_tunnelled_is_refused() {
        let err = EgressConfig::validate(
            raw("address = \"127.0.0.1:0\"\nca_cert = \"a\"\nca_key = \"b\"\ntunnel = [\"API.confluent.cloud:443\"]\n"),
            Path::new(""),
        )
        .unwrap_err();
        assert_eq!(err.field, "egress.tunnel");
    }

    #[test]
    fn certificates_are_either_a_ca_or_a_leaf() {
        for text in [
            "address = \"127.0.0.1:0\"\n",
            "address = \"127.0.0.1:0\"\nca_cert = \"a\"\n",
            "address = \"127.0.0.1:0\"\nca_cert = \"a\"\nca_key = \"b\"\ncert = \"c\"\nkey = \"d\"\n",
        ] {
            assert!(EgressConfig::validate(raw(text), Path::new("")).is_err(), "{text}");
        }
    }

    #[test]
    fn targets_parse_names_ports_and_bracketed_v6() {
        assert_eq!(
            Target::parse("API.Confluent.Cloud:443"),
            Some(Target {
                host: "api.confluent.cloud".into(),
                port: 443
            })
        );
        assert_eq!(Target::parse("[::1]:8443").unwrap().host, "::1");
        for bad in [
            "api.confluent.cloud",
            "host:0",
            "host:99999",
            ":443",
            "a b:443",
            "[zz]:1",
        ] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn networks_contain_their_addresses_and_mapped_v4() {
        let loopback = Network::parse("127.0.0.0/8").unwrap();
        assert!(loopback.contains("127.1.2.3".parse().unwrap()));
        assert!(loopback.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!loopback.contains("128.0.0.1".parse().unwrap()));
        let one = Network::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert_eq!(Network::parse("10.0.0.0/33"), None);
    }
}
