//! `deploy/Dockerfile` and `.dockerignore`, read as instructions (no image is built here), and the
//! `keygate healthcheck` subcommand its HEALTHCHECK runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::kubernetes::Manifests;
use super::{read, repo};
use crate::support::{self, upstream, within};

/// One build stage: its base image (build arguments substituted), its name, its instructions.
#[derive(Debug)]
struct Stage {
    from: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, keyword: &str) -> &str {
        let all = self.all(keyword);
        assert_eq!(
            all.len(),
            1,
            "expected one {keyword} in stage {:?}",
            self.name
        );
        all[0]
    }
}

/// The Dockerfile's stages, continuation lines joined, comments dropped.
fn stages() -> Vec<Stage> {
    let text = read("deploy/Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                if !trimmed.starts_with('#') {
                    current.push_str(trimmed);
                }
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut args = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let rest = rest.trim().to_string();
        if keyword == "ARG" && stages.is_empty() {
            if let Some((name, value)) = rest.split_once('=') {
                args.insert(name.to_string(), value.to_string());
            }
        } else if keyword == "FROM" {
            let mut from = rest.clone();
            for (name, value) in &args {
                from = from.replace(&format!("${{{name}}}"), value);
            }
            let mut words = from.split_whitespace();
            let image = words.next().unwrap().to_string();
            let name = match (words.next(), words.next()) {
                (Some(kw), Some(name)) if kw.eq_ignore_ascii_case("AS") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                from: image,
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("an instruction before the first FROM")
                .instructions
                .push((keyword, rest));
        }
    }
    stages
}

/// The commands of a RUN instruction (`--mount`/`--network` options dropped), split at `&&`.
fn run_commands(run: &str) -> Vec<Vec<String>> {
    let words: Vec<&str> = run
        .split_whitespace()
        .skip_while(|w| w.starts_with("--"))
        .collect();
    words
        .split(|w| *w == "&&")
        .map(|c| c.iter().map(|w| w.to_string()).collect())
        .collect()
}

/// Flags that decide which dependency versions and features get compiled.
fn resolution_flags(command: &[String]) -> BTreeSet<String> {
    const FLAGS: &[&str] = &[
        "--locked",
        "--frozen",
        "--offline",
        "--features",
        "--all-features",
        "--no-default-features",
        "--target",
    ];
    let mut out = BTreeSet::new();
    let mut words = command.iter();
    while let Some(w) = words.next() {
        let name = w.split('=').next().unwrap();
        if FLAGS.contains(&name) {
            let takes_value = (name == "--features" || name == "--target") && !w.contains('=');
            let value = if takes_value {
                words.next().cloned().unwrap_or_default()
            } else {
                String::new()
            };
            out.insert(format!("{w} {value}").trim().to_string());
        }
    }
    out
}

/// The cargo invocations in `.ci/run` that compile the crate.
fn ci_cargo_commands() -> Vec<Vec<String>> {
    read(".ci/run")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo "))
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|c| matches!(c[1].as_str(), "build" | "test" | "clippy" | "check"))
        .collect()
}

#[test]
fn image_builds_with_the_same_cargo_flags_as_ci() {
    let stages = stages();
    let cargo: Vec<Vec<String>> = stages
        .iter()
        .flat_map(|s| s.all("RUN"))
        .flat_map(run_commands)
        .filter(|c| c.first().map(String::as_str) == Some("cargo"))
        .collect();
    assert_eq!(
        cargo.len(),
        1,
        "one cargo invocation in the Dockerfile: {cargo:?}"
    );
    let build = &cargo[0];
    assert_eq!(build[1], "build");
    assert!(build.contains(&"--release".to_string()), "{build:?}");

    let ci = ci_cargo_commands();
    assert!(
        ci.iter().any(|c| c[1] == "test"),
        ".ci/run runs cargo test: {ci:?}"
    );
    let flags = resolution_flags(build);
    assert!(flags.contains("--locked"), "{build:?}");
    for command in &ci {
        assert_eq!(
            resolution_flags(command),
            flags,
            "`{}` (.ci/run) and `{}` (Dockerfile) must resolve the same dependencies",
            command.join(" "),
            build.join(" ")
        );
    }
}

fn version(text: &str) -> Vec<u32> {
    text.split('.').map(|p| p.parse().unwrap()).collect()
}

#[test]
fn builder_and_runtime_agree_on_toolchain_and_debian_release() {
    let stages = stages();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = (&stages[0], &stages[1]);

    // rust:<version>-slim-<codename>
    let tag = build
        .from
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("the builder is a rust image: {}", build.from));
    let (rust, codename) = tag
        .split_once("-slim-")
        .expect("rust:<version>-slim-<codename>");
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let msrv = manifest["package"]["rust-version"].as_str().unwrap();
    assert!(
        version(rust) >= version(msrv),
        "the builder's Rust {rust} is older than rust-version {msrv}"
    );

    // The binary links against the builder's glibc: the runtime must be the same Debian release.
    let releases = BTreeMap::from([("bookworm", "12"), ("trixie", "13")]);
    let release = releases
        .get(codename)
        .unwrap_or_else(|| panic!("unknown Debian codename `{codename}`"));
    assert!(
        runtime
            .from
            .starts_with(&format!("gcr.io/distroless/cc-debian{release}:")),
        "runtime {} must be Debian {release} like the builder ({codename})",
        runtime.from
    );
    assert!(runtime.from.ends_with(":nonroot"), "{}", runtime.from);
    let from_build = format!("--from={}", build.name.as_deref().unwrap());
    assert!(runtime
        .all("COPY")
        .iter()
        .any(|c| c.starts_with(&from_build) && c.ends_with("/usr/local/bin/keygate")));
}

#[test]
fn runtime_image_runs_non_root_and_agrees_with_the_kubernetes_config() {
    let runtime = stages().pop().unwrap();
    let m = Manifests::load();
    let config = m.config(support::ORG_ID, "KEY:SECRET");

    let user = runtime.one("USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric USER");
    assert_ne!(uid, 0);
    let pod_uid = m
        .deployment()
        .pointer("/spec/template/spec/securityContext/runAsUser")
        .and_then(serde_json::Value::as_u64)
        .unwrap();
    assert_eq!(u64::from(uid), pod_uid, "image user and runAsUser agree");

    let exposed: BTreeSet<u16> = runtime
        .all("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    let admin = config.admin.address.port();
    assert_eq!(
        exposed,
        BTreeSet::from([config.listener.address.port(), admin])
    );

    // The audit directory is a volume owned by the runtime user.
    let audit_dir = config
        .audit
        .file
        .as_ref()
        .unwrap()
        .path
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let volumes: Vec<String> = serde_json::from_str(runtime.one("VOLUME")).unwrap();
    assert!(volumes.contains(&audit_dir), "{volumes:?}");
    assert!(runtime
        .all("COPY")
        .iter()
        .any(|c| c.contains(&format!("--chown={user}")) && c.ends_with(&format!(" {audit_dir}"))));

    let entrypoint: Vec<String> = serde_json::from_str(runtime.one("ENTRYPOINT")).unwrap();
    assert_eq!(entrypoint, ["/usr/local/bin/keygate"]);
    let cmd: Vec<String> = serde_json::from_str(runtime.one("CMD")).unwrap();
    assert_eq!(cmd[..2], ["serve", "--config"]);

    // HEALTHCHECK: keygate probing its own /healthz (the liveness path) on the admin port.
    let healthcheck = runtime.one("HEALTHCHECK");
    let exec = healthcheck
        .split_once("CMD ")
        .expect("HEALTHCHECK ... CMD [...]")
        .1;
    let probe: Vec<String> = serde_json::from_str(exec).expect("exec form");
    assert_eq!(probe[0], entrypoint[0]);
    assert_eq!(probe[1], "healthcheck");
    let url: http::Uri = probe[probe.iter().position(|a| a == "--url").unwrap() + 1]
        .parse()
        .unwrap();
    assert_eq!(url.port_u16(), Some(admin));
    assert_eq!(
        url.path(),
        m.container()
            .pointer("/livenessProbe/httpGet/path")
            .and_then(serde_json::Value::as_str)
            .unwrap()
    );
}

/// Where a `.dockerignore` line excludes `path` (literal lines only).
fn excluded_by<'a>(patterns: &'a [String], path: &str) -> Option<&'a str> {
    patterns
        .iter()
        .find(|p| path == p.as_str() || path.starts_with(&format!("{p}/")))
        .map(String::as_str)
}

/// `include_str!`/`include_bytes!` targets in the crate's sources, relative to the repository.
fn included_files(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            included_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for macro_name in ["include_str!(\"", "include_bytes!(\""] {
                for (i, _) in text.match_indices(macro_name) {
                    let rest = &text[i + macro_name.len()..];
                    let target = &rest[..rest.find('"').unwrap()];
                    let full = path.parent().unwrap().join(target);
                    let full = full.canonicalize().unwrap_or(full);
                    let relative = full
                        .strip_prefix(repo().canonicalize().unwrap())
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string();
                    out.insert(relative);
                }
            }
        }
    }
}

#[test]
fn dockerignore_keeps_everything_the_build_needs() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    for p in &patterns {
        assert!(
            !p.contains(['*', '?', '[', '!']) && !p.starts_with('/'),
            "`{p}`: only literal paths, so this test reads them as Docker does"
        );
    }
    for big in [".git", "target"] {
        assert!(excluded_by(&patterns, big).is_some(), "{big} is sent");
    }

    let mut needed: BTreeSet<String> = ["Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs"]
        .into_iter()
        .map(String::from)
        .collect();
    // Targets the manifest names (cargo reads them all when it loads the manifest).
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    for kind in ["bench", "test", "bin"] {
        for target in manifest
            .get(kind)
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = match target.get("path").and_then(toml::Value::as_str) {
                Some(p) => p.to_string(),
                None => format!("benches/{}.rs", target["name"].as_str().unwrap()),
            };
            needed.insert(path);
        }
    }
    included_files(&repo().join("src"), &mut needed);
    assert!(needed.contains("dev/keygate.toml"), "{needed:?}");
    // What the runtime stage copies from the context.
    for stage in stages() {
        for copy in stage.all("COPY") {
            if !copy.starts_with("--from") {
                needed.insert(
                    copy.split_whitespace()
                        .next()
                        .unwrap()
                        .trim_end_matches('/')
                        .into(),
                );
            }
        }
    }
    for path in &needed {
        assert!(repo().join(path).exists(), "{path} does not exist");
        if let Some(p) = excluded_by(&patterns, path) {
            panic!(".dockerignore line `{p}` excludes `{path}`, which the build needs");
        }
    }
}

/// Runs `keygate healthcheck ARGS…` (off the async runtime) and returns its exit code and stderr.
async fn healthcheck(args: &[&str]) -> (Option<i32>, String, Duration) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("healthcheck")
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            started.elapsed(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn healthcheck_exits_0_only_for_a_2xx_answer_in_time() {
    let up = upstream::spawn(None, upstream::echo).await;
    let gw = support::start(support::config(&format!("http://{up}"), "")).await;
    let admin = gw.admin_addr();

    let (code, stderr, _) = within(
        20,
        healthcheck(&["--url", &support::url(admin, "/healthz")]),
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, _) = within(20, healthcheck(&["--url", &support::url(admin, "/readyz")])).await;
    assert_eq!(code, Some(0));

    let (code, stderr, _) =
        within(20, healthcheck(&["--url", &support::url(admin, "/nope")])).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("404"), "{stderr}");

    // A peer that accepts and never answers: the timeout decides.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let (code, stderr, took) = within(
        20,
        healthcheck(&[
            "--url",
            &support::url(silent_addr, "/healthz"),
            "--timeout",
            "300ms",
        ]),
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no answer within 300ms"), "{stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    hold.abort();

    // After shutdown nothing listens: refused is unhealthy.
    gw.shutdown();
    within(10, gw.wait()).await;
    let (code, _, _) = within(
        20,
        healthcheck(&["--url", &support::url(admin, "/healthz")]),
    )
    .await;
    assert_eq!(code, Some(1));

    let (code, stderr, _) = within(
        20,
        healthcheck(&["--url", "https://127.0.0.1:9901/healthz"]),
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
}
