//! `deploy/kubernetes/`: the kustomization, read the way kustomize reads it (resources, bases,
//! ConfigMap generators), and a keygate running the ConfigMap's config.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use keygate::config::{Config, DataSource, IdentitySource};
use serde_json::Value;

use super::yaml::{self, array_at, int_at, str_at};
use super::{read, repo, under, with_org, ORG_PLACEHOLDER};
use crate::support::{self, sim::Sim, within};

/// The directory `kubectl apply -k` is pointed at.
const DIR: &str = "deploy/kubernetes";
/// Manifests kept beside the kustomization but deliberately not applied by it.
const NOT_APPLIED: &[&str] = &["secret.example.yaml"];
/// The ConfigMap holding keygate.toml, and the one holding the policy files.
const CONFIG_MAP: &str = "keygate-config";
const POLICIES_MAP: &str = "keygate-policies";

/// A ConfigMap generator: its name, its files (key → source file), whether its name is stable.
#[derive(Debug)]
pub struct Generator {
    pub name: String,
    pub files: BTreeMap<String, PathBuf>,
    pub stable_name: bool,
}

/// What `kubectl kustomize deploy/kubernetes` would assemble.
#[derive(Debug, Default)]
pub struct Manifests {
    /// Resources with the file each came from.
    pub resources: Vec<(PathBuf, Value)>,
    pub generators: Vec<Generator>,
    /// The top kustomization.
    pub kustomization: Value,
}

impl Manifests {
    pub fn load() -> Manifests {
        let mut manifests = Manifests::default();
        manifests.kustomization = load_kustomization(&repo().join(DIR), &mut manifests);
        manifests
    }

    /// The one resource of a kind.
    pub fn one(&self, kind: &str) -> &Value {
        let all: Vec<&Value> = self
            .resources
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r["kind"] == kind)
            .collect();
        assert_eq!(all.len(), 1, "expected one {kind}");
        all[0]
    }

    pub fn generator(&self, name: &str) -> &Generator {
        self.generators
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no ConfigMap generator `{name}`"))
    }

    pub fn deployment(&self) -> &Value {
        self.one("Deployment")
    }

    /// The keygate container.
    pub fn container(&self) -> &Value {
        let containers = array_at(self.deployment(), "/spec/template/spec/containers");
        containers
            .iter()
            .find(|c| c["name"] == "keygate")
            .expect("a container named keygate")
    }

    /// The pod template's labels.
    pub fn pod_labels(&self) -> &serde_json::Map<String, Value> {
        self.deployment()
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object)
            .expect("pod labels")
    }

    /// A container port by number or by name.
    pub fn container_port(&self, port: &Value) -> u16 {
        let number = match port {
            Value::Number(n) => n.as_i64(),
            Value::String(name) => array_at(self.container(), "/ports")
                .iter()
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_i64()),
            _ => None,
        };
        number
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or_else(|| panic!("port {port} is not a container port"))
    }

    /// The volume behind a container mount path.
    pub fn volume(&self, name: &str) -> &Value {
        array_at(self.deployment(), "/spec/template/spec/volumes")
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume `{name}`"))
    }

    /// The container's mount whose path contains `path`, and its volume.
    pub fn mount_of(&self, path: &Path) -> (&Value, &Value) {
        let mount = array_at(self.container(), "/volumeMounts")
            .iter()
            .filter(|m| path.starts_with(str_at(m, "/mountPath")))
            .max_by_key(|m| str_at(m, "/mountPath").len())
            .unwrap_or_else(|| panic!("`{}` is on no volume mount", path.display()));
        (mount, self.volume(str_at(mount, "/name")))
    }

    /// The `--config` path of the container's arguments.
    pub fn config_path(&self) -> PathBuf {
        let args: Vec<&str> = array_at(self.container(), "/args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(args.first(), Some(&"serve"), "{args:?}");
        let i = args
            .iter()
            .position(|a| *a == "--config")
            .expect("--config");
        PathBuf::from(args[i + 1])
    }

    /// Environment variables filled from Secrets: name → (secret, key).
    pub fn secret_env(&self) -> BTreeMap<String, (String, String)> {
        array_at(self.container(), "/env")
            .iter()
            .filter(|e| e.pointer("/valueFrom/secretKeyRef").is_some())
            .map(|e| {
                (
                    str_at(e, "/name").to_string(),
                    (
                        str_at(e, "/valueFrom/secretKeyRef/name").to_string(),
                        str_at(e, "/valueFrom/secretKeyRef/key").to_string(),
                    ),
                )
            })
            .collect()
    }

    /// Writes what the pod would see into `root`: each ConfigMap volume's generated files under
    /// its mount path, an empty directory for every other volume.
    pub fn stage(&self, root: &Path) {
        for mount in array_at(self.container(), "/volumeMounts") {
            let dir = under(root, Path::new(str_at(mount, "/mountPath")));
            std::fs::create_dir_all(&dir).unwrap();
            let volume = self.volume(str_at(mount, "/name"));
            if let Some(name) = volume.pointer("/configMap/name").and_then(Value::as_str) {
                for (key, source) in &self.generator(name).files {
                    std::fs::copy(source, dir.join(key)).unwrap();
                }
            }
        }
    }

    /// The config text as the container reads it (through its mount).
    pub fn config_text(&self) -> String {
        let path = self.config_path();
        let (mount, volume) = self.mount_of(&path);
        let map = str_at(volume, "/configMap/name");
        let key = path
            .strip_prefix(str_at(mount, "/mountPath"))
            .unwrap()
            .to_str()
            .unwrap();
        let source = self.generator(map).files.get(key).unwrap_or_else(|| {
            panic!("the ConfigMap `{map}` has no key `{key}` for --config `{path:?}`")
        });
        std::fs::read_to_string(source).unwrap()
    }

    /// The config with the organisation placeholder replaced and every Secret-backed variable set
    /// to `credential`.
    pub fn config(&self, org: &str, credential: &str) -> Config {
        let env: HashMap<String, String> = self
            .secret_env()
            .into_keys()
            .map(|name| (name, credential.to_string()))
            .collect();
        Config::from_toml_with_env(&with_org(&self.config_text(), org), &env)
            .unwrap_or_else(|e| panic!("the ConfigMap's keygate.toml: {e}"))
    }
}

fn load_kustomization(dir: &Path, out: &mut Manifests) -> Value {
    let file = dir.join("kustomization.yaml");
    let name = file.display().to_string();
    let k = yaml::document(&std::fs::read_to_string(&file).unwrap(), &name);
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1", "{name}");
    assert_eq!(k["kind"], "Kustomization", "{name}");
    for entry in array_at(&k, "/resources") {
        let path = dir.join(entry.as_str().unwrap());
        assert!(path.exists(), "{name}: resource `{entry}` does not exist");
        if path.is_dir() {
            load_kustomization(&path, out);
        } else {
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in yaml::documents(&text, &path.display().to_string()) {
                out.resources.push((path.clone(), doc));
            }
        }
    }
    let global_stable = k
        .pointer("/generatorOptions/disableNameSuffixHash")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for g in array_at(&k, "/configMapGenerator") {
        let files = array_at(g, "/files")
            .iter()
            .map(|f| {
                let f = f.as_str().unwrap();
                let (key, source) = match f.split_once('=') {
                    Some((key, source)) => (key.to_string(), source),
                    None => (
                        Path::new(f).file_name().unwrap().to_str().unwrap().to_string(),
                        f,
                    ),
                };
                assert!(
                    Path::new(source)
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_))),
                    "{name}: kustomize refuses generator files outside the kustomization's directory: {f}"
                );
                let source = dir.join(source);
                assert!(source.is_file(), "{name}: generator file `{f}` does not exist");
                (key, source)
            })
            .collect();
        out.generators.push(Generator {
            name: str_at(g, "/name").to_string(),
            files,
            stable_name: g
                .pointer("/options/disableNameSuffixHash")
                .and_then(Value::as_bool)
                .unwrap_or(global_stable),
        });
    }
    k
}

fn listed_files(m: &Manifests) -> BTreeSet<PathBuf> {
    m.resources.iter().map(|(p, _)| p.clone()).collect()
}

#[test]
fn every_manifest_parses_and_the_kustomization_applies_all_but_the_secret_example() {
    let m = Manifests::load();
    let listed = listed_files(&m);
    for entry in std::fs::read_dir(repo().join(DIR)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".yaml") || name == "kustomization.yaml" {
            continue;
        }
        let docs = yaml::documents(&std::fs::read_to_string(&path).unwrap(), &name);
        assert!(!docs.is_empty(), "{name} is empty");
        for doc in &docs {
            assert!(doc["apiVersion"].is_string(), "{name}: apiVersion");
            assert!(doc["kind"].is_string(), "{name}: kind");
            assert!(doc.pointer("/metadata/name").is_some(), "{name}: name");
        }
        assert_eq!(
            listed.contains(&path),
            !NOT_APPLIED.contains(&name.as_str()),
            "{name}: every manifest but {NOT_APPLIED:?} must be in kustomization.yaml's resources"
        );
    }
    let kinds: BTreeSet<&str> = m
        .resources
        .iter()
        .map(|(_, r)| r["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
    // The policy files come from the repository's policies/, not from copies.
    let policies = m.generator(POLICIES_MAP);
    assert!(!policies.files.is_empty());
    for source in policies.files.values() {
        assert_eq!(
            source.parent().unwrap().canonicalize().unwrap(),
            repo().join("policies").canonicalize().unwrap()
        );
    }
    assert!(m.generator(CONFIG_MAP).files.contains_key("keygate.toml"));
    let namespace = m.one("Namespace");
    assert_eq!(
        m.kustomization["namespace"], namespace["metadata"]["name"],
        "kustomization.yaml's namespace is the Namespace it creates"
    );
}

#[test]
fn deployment_runs_at_least_two_hardened_replicas() {
    let m = Manifests::load();
    let d = m.deployment();
    assert!(int_at(d, "/spec/replicas") >= 2, "replicas");
    assert_eq!(
        d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
        Some(&Value::from(0)),
        "a rollout must not take a ready pod away before its replacement is ready"
    );
    let selector = d
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .unwrap();
    for (k, v) in selector {
        assert_eq!(m.pod_labels().get(k), Some(v), "selector label {k}");
    }

    let pod = d.pointer("/spec/template/spec").unwrap();
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(int_at(pod, "/securityContext/runAsUser") > 0);
    assert_eq!(
        str_at(pod, "/securityContext/seccompProfile/type"),
        "RuntimeDefault"
    );
    let sa = m.one("ServiceAccount");
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(sa["automountServiceAccountToken"], false);

    let c = m.container();
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_ne!(sc["privileged"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(
        sc["capabilities"]["add"].is_null(),
        "no capability is added"
    );
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource}"
            );
        }
    }
    // The image is a name that kustomization.yaml's `images` rewrites.
    let images = array_at(&m.kustomization, "/images");
    assert!(
        images.iter().any(|i| i["name"] == c["image"]),
        "kustomization.yaml sets the image {}",
        c["image"]
    );
    // The namespace enforces the restricted Pod Security Standard, which the above satisfies.
    assert_eq!(
        m.one("Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}

#[test]
fn config_map_config_loads_and_agrees_with_the_deployment() {
    let m = Manifests::load();

    // As shipped, the placeholder organisation id stops keygate at start-up.
    let env: HashMap<String, String> = m
        .secret_env()
        .into_keys()
        .map(|k| (k, "KEY:SECRET".to_string()))
        .collect();
    let err = Config::from_toml_with_env(&m.config_text(), &env).unwrap_err();
    assert_eq!(err.field_path(), Some("authz.org_id"), "{err}");
    assert!(m.config_text().contains(ORG_PLACEHOLDER));

    let config = m.config(support::ORG_ID, "KEY:SECRET");
    // The container ports are the config's ports, on all interfaces (probes and the Service
    // connect to the pod IP).
    assert_eq!(
        m.container_port(&Value::from("http")),
        config.listener.address.port()
    );
    assert_eq!(
        m.container_port(&Value::from("admin")),
        config.admin.address.port()
    );
    assert!(config.listener.address.ip().is_unspecified());
    assert!(config.admin.address.ip().is_unspecified());

    // keygate's own credential comes from the Secret the example describes.
    let credential = config.upstream.credential.as_ref().expect("credential");
    assert!(!format!("{credential:?}").contains("KEY:SECRET"));
    let secret_env = m.secret_env();
    let text = m.config_text();
    let raw: toml::Table = toml::from_str(&text).unwrap();
    let var = raw["upstream"]["credential"]["env"].as_str().unwrap();
    let (secret, key) = secret_env
        .get(var)
        .unwrap_or_else(|| panic!("`{var}` is not filled from a Secret"));
    let example = yaml::document(
        &read(&format!("{DIR}/secret.example.yaml")),
        "secret.example.yaml",
    );
    assert_eq!(example["kind"], "Secret");
    assert_eq!(str_at(&example, "/metadata/name"), secret);
    assert!(example["stringData"][key.as_str()].is_string());
    assert_eq!(
        example["metadata"]["namespace"],
        m.kustomization["namespace"]
    );

    // The policy files the config names are in a mounted ConfigMap; the audit file is on a
    // writable volume that is not the (read-only) root filesystem.
    let mut files = vec![config.authz.matrix.clone()];
    for source in [&config.authz.bindings, &config.authz.inventory] {
        if let DataSource::File(path) = source {
            files.push(path.clone());
        }
    }
    if let IdentitySource::Directory(path) = &config.identity.source {
        files.push(path.clone());
    }
    for file in &files {
        let (mount, volume) = m.mount_of(file);
        let map = volume
            .pointer("/configMap/name")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("`{}` is not on a ConfigMap volume", file.display()));
        let key = file.strip_prefix(str_at(mount, "/mountPath")).unwrap();
        assert!(
            m.generator(map).files.contains_key(key.to_str().unwrap()),
            "`{}`: the ConfigMap `{map}` has no key {key:?}",
            file.display()
        );
    }
    let audit = config.audit.file.as_ref().expect("an audit file");
    let (mount, volume) = m.mount_of(&audit.path);
    assert_ne!(mount["readOnly"], true, "the audit volume is writable");
    assert!(
        volume.get("emptyDir").is_some() || volume.get("persistentVolumeClaim").is_some(),
        "the audit file is on an emptyDir or a PVC: {volume}"
    );
    assert_eq!(
        audit.path.parent().unwrap(),
        Path::new(str_at(mount, "/mountPath")),
        "keygate does not create the audit directory: the file sits in the mount itself"
    );
}

#[test]
fn config_maps_are_mounted_as_directories_so_updates_reach_the_pods() {
    let m = Manifests::load();
    for mount in array_at(m.container(), "/volumeMounts") {
        let volume = m.volume(str_at(mount, "/name"));
        if volume.get("configMap").is_some() {
            assert!(
                mount.get("subPath").is_none() && mount.get("subPathExpr").is_none(),
                "a subPath mount never sees ConfigMap updates: {mount}"
            );
            assert_eq!(mount["readOnly"], true, "{mount}");
        }
    }
    // The policies keep their name, so an edit updates the mounted files in place; the config
    // gets a content hash, so an edit rolls the pods (keygate reads it only at start-up).
    assert!(m.generator(POLICIES_MAP).stable_name);
    assert!(!m.generator(CONFIG_MAP).stable_name);
}

#[test]
fn graceful_drain_fits_in_the_termination_grace_period() {
    let m = Manifests::load();
    let config = m.config(support::ORG_ID, "KEY:SECRET");
    let pod = m.deployment().pointer("/spec/template/spec").unwrap();
    let grace = u64::try_from(int_at(pod, "/terminationGracePeriodSeconds")).unwrap();
    let pause = m
        .container()
        .pointer("/lifecycle/preStop/sleep/seconds")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    assert!(pause > 0, "a preStop pause lets endpoint removal propagate");
    let drain = config.listener.shutdown_grace.as_secs();
    assert!(
        pause + drain < grace,
        "preStop {pause}s + shutdown_grace {drain}s must finish before SIGKILL at {grace}s"
    );
}

#[test]
fn service_pdb_and_network_policy_select_the_pods_and_open_only_what_keygate_needs() {
    let m = Manifests::load();
    let labels = m.pod_labels();
    let selects = |selector: &Value, what: &str| {
        let selector = selector.as_object().unwrap_or_else(|| panic!("{what}"));
        assert!(!selector.is_empty(), "{what} selects everything");
        for (k, v) in selector {
            assert_eq!(labels.get(k), Some(v), "{what}: label {k}");
        }
    };
    let config = m.config(support::ORG_ID, "KEY:SECRET");

    let service = m.one("Service");
    selects(&service["spec"]["selector"], "Service");
    let ports = array_at(service, "/spec/ports");
    assert_eq!(ports.len(), 1, "only the listener is a Service port");
    assert_eq!(
        m.container_port(&ports[0]["targetPort"]),
        config.listener.address.port()
    );

    let pdb = m.one("PodDisruptionBudget");
    selects(
        &pdb["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget",
    );
    let replicas = int_at(m.deployment(), "/spec/replicas");
    let available = match pdb["spec"].get("maxUnavailable") {
        Some(max) => replicas - max.as_i64().expect("an integer maxUnavailable"),
        None => int_at(pdb, "/spec/minAvailable"),
    };
    assert!(
        available >= 1 && available < replicas,
        "the PDB keeps a pod up and still lets a drain proceed"
    );

    let np = m.one("NetworkPolicy");
    selects(&np["spec"]["podSelector"]["matchLabels"], "NetworkPolicy");
    let types: BTreeSet<&str> = array_at(np, "/spec/policyTypes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(types, BTreeSet::from(["Ingress", "Egress"]));

    // Egress: DNS and HTTPS, nothing else; no rule without ports.
    let mut egress = BTreeSet::new();
    for rule in array_at(np, "/spec/egress") {
        let ports = array_at(rule, "/ports");
        assert!(
            !ports.is_empty(),
            "an egress rule without ports allows all: {rule}"
        );
        for p in ports {
            egress.insert((
                p["protocol"].as_str().unwrap_or("TCP").to_string(),
                p["port"].as_i64().expect("numeric egress port"),
            ));
            assert!(p.get("endPort").is_none());
        }
        if ports.iter().any(|p| p["port"] == 443) {
            let to = array_at(rule, "/to");
            assert!(!to.is_empty() && to.iter().all(|t| t.get("ipBlock").is_some()));
        }
    }
    let expected: BTreeSet<(String, i64)> = [("UDP", 53), ("TCP", 53), ("TCP", 443)]
        .into_iter()
        .map(|(p, n)| (p.to_string(), n))
        .collect();
    assert_eq!(egress, expected);
    assert_eq!(config.upstream.url.scheme_str(), Some("https"));
    assert_eq!(config.upstream.url.port_u16().unwrap_or(443), 443);

    // Ingress: the listener port; the admin port only from the monitoring namespace.
    let admin = config.admin.address.port();
    let listener = config.listener.address.port();
    let mut opened = BTreeSet::new();
    for rule in array_at(np, "/spec/ingress") {
        let ports = array_at(rule, "/ports");
        assert!(
            !ports.is_empty(),
            "an ingress rule without ports opens all: {rule}"
        );
        for p in ports {
            let port = m.container_port(&p["port"]);
            opened.insert(port);
            if port == admin {
                let from = array_at(rule, "/from");
                assert_eq!(from.len(), 1, "{rule}");
                assert_eq!(
                    from[0],
                    serde_json::json!({"namespaceSelector": {"matchLabels":
                        {"kubernetes.io/metadata.name": "monitoring"}}}),
                    "the admin port is open to the monitoring namespace only"
                );
            }
        }
    }
    assert_eq!(opened, BTreeSet::from([listener, admin]));
}

#[tokio::test]
async fn probes_and_scrape_target_answer_from_keygate_running_the_config_map_config() {
    let m = Manifests::load();
    let sim = Sim::start().await;
    let own = sim.key("sa-keygate");
    let mut config = m.config(sim.sim.org_id(), &format!("{}:{}", own.key_id, own.secret));

    // The pod's view of the filesystem, under a temporary root: the ConfigMaps' files where they
    // are mounted, the audit volume. Every file the config names must be there.
    let root = tempfile::tempdir().unwrap();
    m.stage(root.path());
    config.authz.matrix = under(root.path(), &config.authz.matrix);
    assert!(config.authz.matrix.is_file(), "the matrix is mounted");
    let audit = config.audit.file.as_mut().expect("audit file");
    audit.path = under(root.path(), &audit.path);
    let audit_path = audit.path.clone();
    let admin_port = config.admin.address.port();
    config.listener.address = "127.0.0.1:0".parse().unwrap();
    config.admin.address = "127.0.0.1:0".parse().unwrap();
    config.upstream.url = sim.url().parse().unwrap();
    config.audit.stdout = false;

    let gw = within(10, support::start(config)).await;
    let admin = gw.admin_addr();
    let c = m.container();
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        assert!(get.is_object(), "{probe} is an httpGet probe");
        assert_eq!(m.container_port(&get["port"]), admin_port, "{probe} port");
        let path = str_at(get, "/path");
        let response = within(5, support::get(&support::url(admin, path))).await;
        assert_eq!(response.status, 200, "{probe} {path}: {:?}", response.body);
    }
    assert_eq!(str_at(c, "/readinessProbe/httpGet/path"), "/readyz");
    assert_eq!(str_at(c, "/livenessProbe/httpGet/path"), "/healthz");

    let annotations = m
        .deployment()
        .pointer("/spec/template/metadata/annotations")
        .unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        str_at(annotations, "/prometheus.io~1port"),
        admin_port.to_string()
    );
    let metrics = within(
        5,
        support::get(&support::url(
            admin,
            str_at(annotations, "/prometheus.io~1path"),
        )),
    )
    .await;
    assert_eq!(metrics.status, 200);
    assert!(String::from_utf8_lossy(&metrics.body).contains("keygate_"));

    // A governed request is audited durably into the file on the audit volume, and the chain
    // checks out with `keygate audit verify`.
    let body = r#"{"spec":{"owner":{"id":"sa-orders"},"resource":{"id":"lkc-prod01"}}}"#;
    let request = http::Request::post(support::url(gw.local_addr(), "/iam/v2/api-keys"))
        .header("authorization", sim.basic("u-alice"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let created = within(10, support::send(&support::client(), request)).await;
    assert!(created.status.is_success(), "{:?}", created.body);
    gw.shutdown();
    within(10, gw.wait()).await;
    let (code, stdout) = audit_verify(&audit_path).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.starts_with("ok: ") && !stdout.starts_with("ok: 0 "),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&audit_path).unwrap();
    std::fs::write(&audit_path, text.replacen("lkc-prod01", "lkc-dev01", 1)).unwrap();
    assert_eq!(
        audit_verify(&audit_path).await.0,
        Some(1),
        "tampering is detected"
    );
}

/// `keygate audit verify FILE`: exit code and stdout.
async fn audit_verify(file: &Path) -> (Option<i32>, String) {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["audit", "verify"])
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[test]
fn kubectl_kustomize_renders_the_manifests_when_kubectl_is_installed() {
    let output = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(DIR))
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("kubectl is not installed: kustomize rendering not checked");
            return;
        }
        Err(err) => panic!("kubectl: {err}"),
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let docs = yaml::documents(
        &String::from_utf8(output.stdout).unwrap(),
        "kustomize output",
    );
    let m = Manifests::load();
    assert_eq!(docs.len(), m.resources.len() + m.generators.len());
    let namespace = m.kustomization["namespace"].as_str().unwrap();
    let mut config_maps = BTreeMap::new();
    for doc in &docs {
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], namespace, "{}", doc["kind"]);
        }
        if doc["kind"] == "ConfigMap" {
            config_maps.insert(
                str_at(doc, "/metadata/name").to_string(),
                doc["data"].clone(),
            );
        }
    }
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let image = str_at(deployment, "/spec/template/spec/containers/0/image");
    let wanted = &array_at(&m.kustomization, "/images")[0];
    assert_eq!(
        image,
        format!(
            "{}:{}",
            str_at(wanted, "/newName"),
            str_at(wanted, "/newTag")
        )
    );
    // Every ConfigMap volume refers to a rendered ConfigMap (with its hash suffix) holding
    // exactly the generator's files.
    for volume in array_at(deployment, "/spec/template/spec/volumes") {
        let Some(name) = volume.pointer("/configMap/name").and_then(Value::as_str) else {
            continue;
        };
        let data = config_maps
            .get(name)
            .unwrap_or_else(|| panic!("volume refers to a missing ConfigMap `{name}`"));
        let generator = m
            .generators
            .iter()
            .find(|g| name == g.name || name.starts_with(&format!("{}-", g.name)))
            .unwrap();
        let keys: Vec<&String> = data.as_object().unwrap().keys().collect();
        assert_eq!(keys, generator.files.keys().collect::<Vec<_>>());
        for (key, source) in &generator.files {
            assert_eq!(data[key], std::fs::read_to_string(source).unwrap());
        }
    }
}

/// The overlay that points the replicas at a Redis for shared rate limits.
const SHARED_DIR: &str = "deploy/kubernetes-shared-limits";

#[test]
fn shared_limits_overlay_points_every_replica_at_the_redis_it_deploys() {
    let dir = repo().join(SHARED_DIR);
    let file = |name: &str| read(&format!("{SHARED_DIR}/{name}"));
    let mut docs: HashMap<String, Vec<Value>> = HashMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".yaml") {
            let parsed = yaml::documents(&std::fs::read_to_string(&path).unwrap(), &name);
            assert!(!parsed.is_empty(), "{name} is empty");
            docs.insert(name, parsed);
        }
    }
    let k = &docs["kustomization.yaml"][0];
    assert_eq!(k["kind"], "Kustomization");
    let base = Manifests::load();
    assert_eq!(k["namespace"], base.kustomization["namespace"]);
    let resources: Vec<&str> = array_at(k, "/resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        resources,
        ["../kubernetes", "redis.yaml"],
        "the base plus Redis"
    );
    let generator = &array_at(k, "/configMapGenerator")[0];
    assert_eq!(str_at(generator, "/name"), CONFIG_MAP);
    assert_eq!(str_at(generator, "/behavior"), "replace");
    assert_eq!(array_at(generator, "/files"), [Value::from("keygate.toml")]);
    let patched: BTreeSet<&str> = array_at(k, "/patches")
        .iter()
        .map(|p| str_at(p, "/path"))
        .collect();
    for name in &patched {
        assert!(docs.contains_key(*name), "patch `{name}` does not exist");
    }
    for name in docs.keys() {
        assert!(
            name == "kustomization.yaml"
                || name == "secret.example.yaml"
                || resources.contains(&name.as_str())
                || patched.contains(name.as_str()),
            "{name} is neither a resource nor a patch"
        );
    }

    // The config is the base's, unchanged, plus the shared limits.
    let text = file("keygate.toml");
    assert!(
        text.starts_with(&base.config_text()),
        "kubernetes-shared-limits/keygate.toml must start with kubernetes/keygate.toml unchanged"
    );
    let env: HashMap<String, String> = [
        ("KEYGATE_UPSTREAM_CREDENTIAL", "KEY:SECRET"),
        ("KEYGATE_REDIS_PASSWORD", "redis-password"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = Config::from_toml_with_env(&with_org(&text, support::ORG_ID), &env)
        .unwrap_or_else(|e| panic!("kubernetes-shared-limits/keygate.toml: {e}"));
    let shared = config.ratelimit.shared().expect("[ratelimit.shared]");
    assert!(config.ratelimit.shared_limit_ids().count() >= 2);
    let url = shared.url();
    assert_eq!(url.scheme_str(), Some("redis"));

    // The URL names the Service, whose port reaches the Redis container.
    let redis = &docs["redis.yaml"];
    let of_kind = |kind: &str| {
        redis
            .iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in redis.yaml"))
    };
    let service = of_kind("Service");
    assert_eq!(url.host(), Some(str_at(service, "/metadata/name")));
    let service_port = &array_at(service, "/spec/ports")[0];
    assert_eq!(
        i64::from(url.port_u16().unwrap_or(6379)),
        int_at(service_port, "/port")
    );
    let deployment = of_kind("Deployment");
    let pod = deployment.pointer("/spec/template").unwrap();
    let redis_labels = pod.pointer("/metadata/labels").unwrap();
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&redis_labels[k], v, "the Service selects the Redis pods");
    }
    let container = &array_at(pod, "/spec/containers")[0];
    let target = &service_port["targetPort"];
    assert!(
        array_at(container, "/ports")
            .iter()
            .any(|p| p["name"] == *target && p["containerPort"] == 6379),
        "targetPort {target} is the Redis container port"
    );

    // Persistence off, a password, hardened like keygate (the namespace enforces "restricted").
    let args: Vec<&str> = array_at(container, "/args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let arg_after = |flag: &str| {
        let i = args
            .iter()
            .position(|a| *a == flag)
            .unwrap_or_else(|| panic!("{flag}"));
        args[i + 1]
    };
    assert_eq!(arg_after("--save"), "");
    assert_eq!(arg_after("--appendonly"), "no");
    assert_eq!(arg_after("--requirepass"), "$(REDIS_PASSWORD)");
    let spec = pod.pointer("/spec").unwrap();
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        str_at(spec, "/securityContext/seccompProfile/type"),
        "RuntimeDefault"
    );
    let sc = &container["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));

    // One Secret for both: Redis' --requirepass and keygate's `password.env`.
    let secret_of = |env: &[Value], name: &str| -> (String, String) {
        let e = env
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no env {name}"));
        (
            str_at(e, "/valueFrom/secretKeyRef/name").to_string(),
            str_at(e, "/valueFrom/secretKeyRef/key").to_string(),
        )
    };
    let redis_secret = secret_of(array_at(container, "/env"), "REDIS_PASSWORD");
    let raw: toml::Table = toml::from_str(&text).unwrap();
    let var = raw["ratelimit"]["shared"]["password"]["env"]
        .as_str()
        .unwrap();
    let patch = &docs["deployment-redis-password.yaml"][0];
    assert_eq!(patch["kind"], "Deployment");
    assert_eq!(
        patch["metadata"]["name"],
        base.deployment()["metadata"]["name"]
    );
    let patched_container = &array_at(patch, "/spec/template/spec/containers")[0];
    assert_eq!(patched_container["name"], base.container()["name"]);
    assert_eq!(
        secret_of(array_at(patched_container, "/env"), var),
        redis_secret
    );
    let example = &docs["secret.example.yaml"][0];
    assert_eq!(example["kind"], "Secret");
    assert_eq!(str_at(example, "/metadata/name"), redis_secret.0);
    assert!(example["stringData"][redis_secret.1.as_str()].is_string());

    // keygate may reach exactly the Redis pods on the Service's port; Redis takes only keygate.
    let egress = &docs["networkpolicy-egress-redis.yaml"][0][0];
    assert_eq!(egress["op"], "add");
    assert_eq!(egress["path"], "/spec/egress/-");
    let rule = &egress["value"];
    let to = array_at(rule, "/to");
    assert_eq!(to.len(), 1);
    for (k, v) in to[0]["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&redis_labels[k], v);
    }
    assert_eq!(array_at(rule, "/ports")[0]["port"], 6379);
    let target = array_at(k, "/patches")
        .iter()
        .find(|p| p["path"] == "networkpolicy-egress-redis.yaml")
        .unwrap();
    assert_eq!(
        target["target"]["name"],
        base.one("NetworkPolicy")["metadata"]["name"]
    );
    let policy = of_kind("NetworkPolicy");
    let from = array_at(policy, "/spec/ingress/0/from");
    assert_eq!(from.len(), 1);
    for (k, v) in from[0]["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            base.pod_labels().get(k),
            Some(v),
            "only keygate's pods reach Redis"
        );
    }
    assert!(
        array_at(policy, "/spec/egress").is_empty(),
        "Redis reaches nothing"
    );

    // What kustomize makes of it, when kubectl is here to ask.
    let output = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("kubectl is not installed: kustomize rendering not checked");
            return;
        }
        Err(err) => panic!("kubectl: {err}"),
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = yaml::documents(&String::from_utf8(output.stdout).unwrap(), "kustomize");
    let keygate = rendered
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "keygate")
        .unwrap();
    let env = array_at(keygate, "/spec/template/spec/containers/0/env");
    assert_eq!(secret_of(env, var), redis_secret);
    assert!(env
        .iter()
        .any(|e| e["name"] == "KEYGATE_UPSTREAM_CREDENTIAL"));
    let np = rendered
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy" && d["metadata"]["name"] == "keygate")
        .unwrap();
    let rules = array_at(np, "/spec/egress");
    assert_eq!(
        rules.len(),
        array_at(base.one("NetworkPolicy"), "/spec/egress").len() + 1
    );
    assert_eq!(rules.last().unwrap(), rule);
    let map = rendered
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && str_at(d, "/metadata/name").starts_with(&format!("{CONFIG_MAP}-"))
        })
        .unwrap();
    assert_eq!(str_at(map, "/data/keygate.toml"), text);
    let names: Vec<&str> = rendered
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| str_at(d, "/metadata/name"))
        .collect();
    assert_eq!(names.len(), 2, "keygate and its Redis: {names:?}");
}
