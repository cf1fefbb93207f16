//! The Helm chart `helm/airlock` and the plain manifests in `deploy/`,
//! checked with the real helm client, the Kubernetes API schemas
//! (`kubernetes-validate --strict`), airlock's own configuration loader and a
//! running daemon's `/metrics`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde::Deserialize as _;
use serde_yaml_ng::Value;
use support::daemon::{Daemon, DaemonSetup};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::tools;

/// The values every install must give.
const REQUIRED: &[&str] = &[
    "registry.target=registry.local/mirror",
    "trust.existingSecret=airlock-keys",
];

/// One case of the test matrix: a name and the `--set` values on top of
/// [`REQUIRED`] (a `trust.*` value here replaces the required Secret).
struct Case {
    name: &'static str,
    set: &'static [&'static str],
}

const MATRIX: &[Case] = &[
    Case {
        name: "defaults",
        set: &[],
    },
    Case {
        name: "existing claim, 3 replicas",
        set: &[
            "replicaCount=3",
            "drop.existingClaim=transfer-drop",
            "kube.leaseDuration=30s",
        ],
    },
    Case {
        name: "USB stick on an edge node",
        set: &[
            "drop.hostPath=/media/usb",
            "drop.readOnly=true",
            "nodeSelector.airlock/usb=present",
            "state.persistence.enabled=true",
        ],
    },
    Case {
        name: "NFS share",
        set: &[
            "drop.nfs.server=nfs.local",
            "drop.nfs.path=/exports/drop",
            "config.drop.settle_time=30s",
        ],
    },
    Case {
        name: "monitoring, dashboard and network policy",
        set: &[
            "serviceMonitor.enabled=true",
            "serviceMonitor.labels.release=kube-prometheus-stack",
            "prometheusRule.enabled=true",
            "prometheusRule.alertLabels.team=platform",
            "dashboard.enabled=true",
            "networkPolicy.enabled=true",
            "networkPolicy.ingress.namespaceSelectors[0].matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
            "networkPolicy.egress.registry.cidrs[0]=10.20.0.0/16",
            "networkPolicy.egress.registry.ports[0]=5000",
            "podDisruptionBudget.enabled=true",
        ],
    },
    Case {
        name: "console behind basic auth and an Ingress",
        set: &[
            "console.auth.existingSecret=airlock-console",
            "console.auth.key=htpasswd",
            "ingress.enabled=true",
            "ingress.className=nginx",
            "ingress.host=airlock.internal",
            "ingress.tls[0].secretName=airlock-tls",
            "ingress.tls[0].hosts[0]=airlock.internal",
            "ingress.annotations.cert-manager\\.io/cluster-issuer=internal-ca",
        ],
    },
    Case {
        name: "registry auth and CA secrets",
        set: &[
            "registry.auth.existingSecret=registry-credentials",
            "registry.caCert.existingSecret=registry-ca",
            "registry.clientCert.existingSecret=airlock-client-tls",
            "attestations.signingKey.existingSecret=airlock-attestation",
            "state.existingClaim=airlock-state",
            "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ],
    },
    Case {
        name: "keys and CA from ConfigMaps, config overrides",
        set: &[
            "trust.existingSecret=",
            "trust.existingConfigMap=airlock-keys",
            "registry.caCert.existingConfigMap=corporate-ca",
            "registry.caCert.key=ca-bundle.pem",
            "registry.plainHttp=true",
            "config.imports.on_success=move",
            "config.registry.blob_concurrency=8",
            "kube.enabled=false",
        ],
    },
    Case {
        name: "keyless signers only",
        set: &[
            "trust.existingSecret=",
            "trust.keyless.trustedRoot.existingConfigMap=sigstore-root",
            "trust.keyless.signers[0].identity=release@example.com",
            "trust.keyless.signers[0].issuer=https://accounts.example.com",
            "trust.keyless.signers[1].identity=https://ci.example.com/release.yml",
            "trust.keyless.signers[1].issuer=https://ci.example.com",
        ],
    },
    Case {
        name: "image signature rules",
        set: &[
            "trust.imageSignatures.rules[0].images[0]=quay.io/acme/*",
            "trust.imageSignatures.rules[0].policy=require",
            "trust.imageSignatures.rules[0].keysConfigMap=acme-image-keys",
            "trust.imageSignatures.rules[1].images[0]=*",
            "trust.imageSignatures.rules[1].policy=ignore",
        ],
    },
];

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/airlock")
}

fn helm(args: &[&str], set: &[&str]) -> Output {
    let mut command = tools::command("helm");
    command.args(args).arg(chart_dir());
    for value in REQUIRED.iter().chain(set) {
        command.arg("--set").arg(value);
    }
    tools::output(&mut command, "run helm")
}

fn render(case: &Case) -> String {
    let output = helm(&["template", "airlock", "--namespace", "airlock"], case.set);
    assert!(
        output.status.success(),
        "helm template ({}) failed:\n{}",
        case.name,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("helm prints UTF-8")
}

fn documents(rendered: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(rendered)
        .map(|document| Value::deserialize(document).expect("helm renders YAML"))
        .filter(|value| !value.is_null())
        .collect()
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn api_version(object: &Value) -> &str {
    object["apiVersion"].as_str().unwrap_or_default()
}

fn find<'a>(objects: &'a [Value], wanted: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == wanted).collect()
}

/// airlock.yaml from the rendered ConfigMap that holds it.
fn rendered_config(objects: &[Value]) -> String {
    find(objects, "ConfigMap")
        .into_iter()
        .find_map(|c| c["data"]["airlock.yaml"].as_str())
        .expect("a ConfigMap with airlock.yaml")
        .to_owned()
}

/// The read-only mount at `dir` in `pod`'s container and the volume behind
/// it; panics naming `dir` when nothing is mounted there.
fn read_only_mount<'a>(pod: &'a Value, dir: &str) -> &'a Value {
    let mount = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(dir))
        .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
    assert_eq!(mount["readOnly"].as_bool(), Some(true), "{mount:?}");
    pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume for the mount at {dir}"))
}

#[test]
fn chart_lints_strictly_for_every_case_of_the_matrix() {
    for case in MATRIX {
        let output = helm(&["lint", "--strict"], case.set);
        assert!(
            output.status.success(),
            "helm lint --strict ({}) failed:\n{}{}",
            case.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn every_rendered_builtin_object_passes_kubernetes_validate_strict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    let mut kinds = BTreeSet::new();
    for (n, case) in MATRIX.iter().enumerate() {
        for (i, object) in documents(&render(case)).iter().enumerate() {
            // ServiceMonitor and PrometheusRule are prometheus-operator CRDs,
            // which kubernetes-validate has no schema for.
            if api_version(object).starts_with("monitoring.coreos.com/") {
                continue;
            }
            kinds.insert(kind(object).to_owned());
            let path = dir
                .path()
                .join(format!("{n:02}-{i:02}-{}.yaml", kind(object)));
            std::fs::write(&path, serde_yaml_ng::to_string(object).expect("YAML")).expect("write");
            files.push(path);
        }
    }
    for expected in [
        "Deployment",
        "ConfigMap",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "PersistentVolumeClaim",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Ingress",
    ] {
        assert!(
            kinds.contains(expected),
            "no {expected} rendered: {kinds:?}"
        );
    }
    let output = tools::output(
        tools::command("kubernetes-validate")
            .args(["--strict", "--quiet", "--kubernetes-version", "1.33.0"])
            .args(&files),
        "validate the rendered objects",
    );
    assert!(
        output.status.success(),
        "kubernetes-validate --strict refused rendered objects:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_rendered_config_passes_airlock_config_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `config check` reads image-signature keys (not the other mounted
    // files): the pod's key mounts are stood in for by directories holding
    // a real public key, and the rendered paths pointed at them.
    let image_keys = dir.path().join("image-keys");
    let key = TestKey::generate(KeyKind::EcP256);
    for rule in 0..4 {
        let mounted = image_keys.join(rule.to_string());
        std::fs::create_dir_all(&mounted).expect("the stand-in mount");
        std::fs::copy(key.public_pem(), mounted.join("key.pem")).expect("a key in it");
    }
    for (n, case) in MATRIX.iter().enumerate() {
        let objects = documents(&render(case));
        let path = dir.path().join(format!("{n}.yaml"));
        let config = rendered_config(&objects)
            .replace("/etc/airlock/image-keys", &image_keys.display().to_string());
        std::fs::write(&path, config).expect("write the config");
        let output = config_check(&path);
        assert!(
            output.status.success(),
            "airlock config check refused the config of {}:\n{}\n{}",
            case.name,
            String::from_utf8_lossy(&output.stderr),
            rendered_config(&objects)
        );
    }
}

fn config_check(path: &Path) -> Output {
    let mut command = support::airlock();
    command.args(["config", "check"]).arg(path);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AIRLOCK_") {
            command.env_remove(name);
        }
    }
    tools::output(&mut command, "run airlock config check")
}

#[test]
fn config_values_reach_airlock_yaml_and_roll_the_pods() {
    let plain = documents(&render(&MATRIX[0]));
    let changed = documents(&render(&Case {
        name: "settle time",
        set: &["config.drop.settle_time=45s"],
    }));
    let config: Value = serde_yaml_ng::from_str(&rendered_config(&changed)).expect("YAML");
    assert_eq!(config["drop"]["settle_time"].as_str(), Some("45s"));
    // The chart's own keys survive the merge.
    assert_eq!(config["drop"]["dirs"][0].as_str(), Some("/drop"));
    let checksum = |objects: &[Value]| {
        find(objects, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]
            ["checksum/config"]
            .as_str()
            .expect("checksum/config")
            .to_owned()
    };
    assert_ne!(checksum(&plain), checksum(&changed));
}

#[test]
fn nfs_and_usb_drops_poll_and_a_claim_does_not() {
    let poll = |case: &Case| {
        let config: Value =
            serde_yaml_ng::from_str(&rendered_config(&documents(&render(case)))).expect("YAML");
        config["drop"]["poll"].as_bool().expect("drop.poll")
    };
    assert!(!poll(&MATRIX[0]));
    assert!(poll(&MATRIX[2]), "hostPath polls");
    assert!(poll(&MATRIX[3]), "NFS polls");
    assert!(!poll(&Case {
        name: "NFS without polling",
        set: &[
            "drop.nfs.server=nfs.local",
            "drop.nfs.path=/x",
            "drop.poll=false"
        ],
    }));
}

#[test]
fn schema_and_chart_refuse_wrong_values_with_a_clear_message() {
    let refused: &[(&[&str], &str)] = &[
        (&["replicaCount=abc"], "replicaCount"),
        (&["nosuchvalue=1"], "nosuchvalue"),
        (&["registry.plainHttp=maybe"], "plainHttp"),
        (&["registry.target="], "registry.target is required"),
        (&["trust.existingSecret="], "trust"),
        (
            &["drop.hostPath=/media/usb", "drop.existingClaim=x"],
            "choose one of",
        ),
        (&["replicaCount=2"], "replicaCount > 1 needs a volume"),
        (
            &[
                "replicaCount=2",
                "drop.existingClaim=shared",
                "state.persistence.enabled=true",
            ],
            "each pod keeps its own state",
        ),
        (&["drop.nfs.server=nfs.local"], "drop.nfs needs both"),
        (&["kube.leaseDuration=soon"], "leaseDuration"),
        (
            &[
                "trust.keyless.signers[0].identity=release@example.com",
                "trust.keyless.signers[0].issuer=https://accounts.example.com",
            ],
            "trust.keyless.signers needs trust.keyless.trustedRoot.existingConfigMap",
        ),
        (
            &[
                "trust.keyless.trustedRoot.existingConfigMap=sigstore-root",
                "trust.keyless.signers[0].identity=release@example.com",
            ],
            "issuer",
        ),
        (
            &[
                "trust.imageSignatures.rules[0].images[0]=quay.io/acme/*",
                "trust.imageSignatures.rules[0].policy=require",
            ],
            "trust.imageSignatures.rules[0] (policy require) needs keysConfigMap",
        ),
        (
            &[
                "trust.imageSignatures.rules[0].images[0]=quay.io/acme/*",
                "trust.imageSignatures.rules[0].policy=always",
            ],
            "policy",
        ),
    ];
    for (set, message) in refused {
        let output = helm(&["template", "airlock"], set);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{set:?} was accepted");
        assert!(stderr.contains(message), "{set:?}: {stderr}");
    }
}

#[test]
fn default_pod_is_hardened_and_its_rights_are_namespaced_and_minimal() {
    let objects = documents(&render(&MATRIX[0]));
    let deployment = find(&objects, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert_eq!(pod["terminationGracePeriodSeconds"].as_u64(), Some(30));
    let env: Vec<&str> = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"));

    for case in MATRIX {
        let objects = documents(&render(case));
        for object in &objects {
            assert!(
                !kind(object).starts_with("Cluster"),
                "{}: a cluster-wide {}",
                case.name,
                kind(object)
            );
        }
    }
    let role = find(&objects, "Role")[0];
    let mut rights = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        for group in rule["apiGroups"].as_sequence().expect("apiGroups") {
            for resource in rule["resources"].as_sequence().expect("resources") {
                for verb in rule["verbs"].as_sequence().expect("verbs") {
                    rights.insert(format!(
                        "{}/{} {}",
                        group.as_str().unwrap_or_default(),
                        resource.as_str().unwrap_or_default(),
                        verb.as_str().unwrap_or_default()
                    ));
                }
            }
        }
    }
    let expected: BTreeSet<String> = [
        "coordination.k8s.io/leases get",
        "coordination.k8s.io/leases list",
        "coordination.k8s.io/leases create",
        "coordination.k8s.io/leases update",
        "coordination.k8s.io/leases patch",
        "coordination.k8s.io/leases delete",
        "events.k8s.io/events create",
        "events.k8s.io/events patch",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(rights, expected);
}

#[test]
fn deploy_manifests_equal_their_render() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    tools::require("helm");
    let output = tools::run(
        std::process::Command::new(root.join("scripts/render-deploy")).arg("--stdout"),
        "render deploy/airlock.yaml",
    );
    let committed =
        std::fs::read_to_string(root.join("deploy/airlock.yaml")).expect("deploy/airlock.yaml");
    assert!(
        String::from_utf8_lossy(&output.stdout) == committed,
        "deploy/airlock.yaml differs from its render: run scripts/render-deploy"
    );
    let objects = documents(&committed);
    let config = rendered_config(&objects);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("airlock.yaml");
    std::fs::write(&path, config).expect("write");
    assert!(config_check(&path).status.success());
}

/// The metric names a PromQL expression selects: every identifier directly
/// followed by `{` or standing alone as a function argument that starts with
/// `airlock_`. Label values (in quotes) are skipped.
fn selected_metrics(expr: &str, names: &mut BTreeSet<String>) {
    let mut chars = expr.char_indices().peekable();
    let mut in_quotes = false;
    let mut in_braces = false;
    while let Some((start, c)) = chars.next() {
        if in_quotes {
            if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '{' => in_braces = true,
            '}' => in_braces = false,
            c if !in_braces && (c.is_ascii_alphabetic() || c == '_') => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, n)) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' || n == ':' {
                        end = i + n.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = &expr[start..end];
                let next = expr[end..].trim_start().chars().next();
                if next == Some('{') || word.starts_with("airlock_") {
                    names.insert(word.to_owned());
                }
            }
            _ => {}
        }
    }
}

#[test]
fn every_metric_in_the_rules_and_dashboard_is_exported_by_a_running_daemon() {
    let monitoring = MATRIX
        .iter()
        .find(|c| c.name.starts_with("monitoring"))
        .expect("the monitoring case");
    let objects = documents(&render(monitoring));
    let mut names = BTreeSet::new();
    let rules = find(&objects, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    let mut alerts = 0;
    for group in rules[0]["spec"]["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            selected_metrics(rule["expr"].as_str().expect("expr"), &mut names);
            alerts += 1;
        }
    }
    assert!(alerts >= 5, "{alerts} alerts");
    let dashboard = find(&objects, "ConfigMap")
        .into_iter()
        .find_map(|c| c["data"]["airlock.json"].as_str())
        .expect("the dashboard ConfigMap");
    let dashboard: serde_json::Value = serde_json::from_str(dashboard).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "{} panels", panels.len());
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            selected_metrics(target["expr"].as_str().expect("expr"), &mut names);
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            selected_metrics(query, &mut names);
        }
    }
    assert!(names.len() >= 8, "{names:?}");

    let registry = Registry::start();
    let key = TestKey::generate(KeyKind::EcP256);
    let drop = tempfile::tempdir().expect("drop");
    let state = tempfile::tempdir().expect("state");
    let daemon = Daemon::start(
        &DaemonSetup {
            drop_dir: drop.path().to_owned(),
            state_dir: state.path().to_owned(),
            extra: Vec::new(),
            envs: Vec::new(),
        },
        &registry,
        key.public_pem(),
    );
    let (status, scrape) = daemon.get("/metrics").expect("scrape /metrics");
    assert_eq!(status, 200);
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "named in rules or dashboard but not exported: {missing:?}"
    );
}

#[test]
fn console_auth_mounts_the_htpasswd_secret_and_the_ingress_reaches_the_service() {
    let case = MATRIX
        .iter()
        .find(|c| c.name == "console behind basic auth and an Ingress")
        .expect("the console case");
    let objects = documents(&render(case));
    let config: Value = serde_yaml_ng::from_str(&rendered_config(&objects)).expect("YAML");
    let auth = &config["http"]["auth"];
    assert_eq!(
        auth["htpasswd_file"].as_str(),
        Some("/run/secrets/airlock/console/htpasswd"),
        "{config:?}"
    );
    let open: Vec<&str> = auth["open_paths"]
        .as_sequence()
        .expect("open_paths")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(open, ["/healthz", "/readyz", "/metrics"]);
    assert_eq!(config["http"]["listen"].as_str(), Some("0.0.0.0:9090"));

    let deployment = find(&objects, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "console-auth")
        .expect("a console-auth volume");
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("airlock-console")
    );
    assert_eq!(
        volume["secret"]["items"][0]["key"].as_str(),
        Some("htpasswd")
    );
    let mount = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == "console-auth")
        .expect("the console-auth mount");
    assert_eq!(
        mount["mountPath"].as_str(),
        Some("/run/secrets/airlock/console")
    );
    assert_eq!(mount["readOnly"].as_bool(), Some(true));

    let ingress = find(&objects, "Ingress")[0];
    let service = find(&objects, "Service")[0];
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"].as_str(), Some("airlock.internal"));
    let backend = &rule["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"], service["metadata"]["name"]);
    assert_eq!(backend["port"]["name"], service["spec"]["ports"][0]["name"]);
    assert_eq!(ingress["spec"]["ingressClassName"].as_str(), Some("nginx"));
    assert_eq!(
        ingress["spec"]["tls"][0]["secretName"].as_str(),
        Some("airlock-tls")
    );

    // By default: no Ingress, no auth.
    let defaults = documents(&render(&MATRIX[0]));
    assert!(find(&defaults, "Ingress").is_empty());
    let config: Value = serde_yaml_ng::from_str(&rendered_config(&defaults)).expect("YAML");
    assert!(config["http"].get("auth").is_none(), "{config:?}");
    // An Ingress without a host is refused with a clear message.
    let output = helm(&["template", "airlock"], &["ingress.enabled=true"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ingress.host is required"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn secrets_are_mounted_where_the_config_points() {
    let case = MATRIX
        .iter()
        .find(|c| c.name == "registry auth and CA secrets")
        .expect("the registry secrets case");
    let objects = documents(&render(case));
    let config: Value = serde_yaml_ng::from_str(&rendered_config(&objects)).expect("YAML");
    let registry = &config["registry"];
    let pod = &find(&objects, "Deployment")[0]["spec"]["template"]["spec"];
    for (file, secret) in [
        (&registry["auth_file"], "registry-credentials"),
        (&registry["ca_cert"][0], "registry-ca"),
        (&registry["client_cert"], "airlock-client-tls"),
        (&registry["client_key"], "airlock-client-tls"),
        (
            &config["attestations"]["signing_key"],
            "airlock-attestation",
        ),
    ] {
        let file = file.as_str().unwrap_or_else(|| panic!("{config:?}"));
        let (dir, name) = file.rsplit_once('/').expect("an absolute path");
        let volume = read_only_mount(pod, dir);
        assert_eq!(
            volume["secret"]["secretName"].as_str(),
            Some(secret),
            "{volume:?}"
        );
        let items = volume["secret"]["items"].as_sequence().expect("items");
        assert!(
            items.iter().any(|i| i["path"].as_str() == Some(name)),
            "{file} is not among the items of {volume:?}"
        );
    }
    // Without the values, none of it.
    let defaults = documents(&render(&MATRIX[0]));
    let config: Value = serde_yaml_ng::from_str(&rendered_config(&defaults)).expect("YAML");
    assert!(
        config["registry"].get("client_cert").is_none(),
        "{config:?}"
    );
}

#[test]
fn keyless_signers_point_at_the_mounted_trusted_root() {
    let case = MATRIX
        .iter()
        .find(|c| c.name == "keyless signers only")
        .expect("the keyless case");
    let objects = documents(&render(case));
    let config: Value = serde_yaml_ng::from_str(&rendered_config(&objects)).expect("YAML");
    let trust = &config["trust"];
    assert_eq!(
        trust["public_keys"].as_sequence().map(Vec::len),
        Some(0),
        "{trust:?}"
    );
    let root = "/etc/airlock/trusted-root/trusted_root.json";
    let entries = trust["keyless"].as_sequence().expect("trust.keyless");
    let signers: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["trusted_root"].as_str().unwrap_or_default(),
                e["identity"].as_str().unwrap_or_default(),
                e["issuer"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        signers,
        [
            (root, "release@example.com", "https://accounts.example.com"),
            (
                root,
                "https://ci.example.com/release.yml",
                "https://ci.example.com"
            ),
        ]
    );
    let pod = &find(&objects, "Deployment")[0]["spec"]["template"]["spec"];
    let volume = read_only_mount(pod, "/etc/airlock/trusted-root");
    assert_eq!(volume["configMap"]["name"].as_str(), Some("sigstore-root"));
    assert_eq!(
        volume["configMap"]["items"][0]["path"].as_str(),
        Some("trusted_root.json"),
        "{volume:?}"
    );
    // No public keys were given: no keys volume to mount.
    let volumes = pod["volumes"].as_sequence().expect("volumes");
    assert!(!volumes.iter().any(|v| v["name"] == "keys"), "{volumes:?}");
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("mounts");
    assert!(
        !mounts
            .iter()
            .any(|m| m["mountPath"].as_str() == Some("/etc/airlock/keys")),
        "{mounts:?}"
    );

    // Beside public keys, both are configured.
    let both = documents(&render(&Case {
        name: "keys and keyless signers",
        set: &case.set[1..],
    }));
    let config: Value = serde_yaml_ng::from_str(&rendered_config(&both)).expect("YAML");
    assert_eq!(
        config["trust"]["public_keys"][0].as_str(),
        Some("/etc/airlock/keys")
    );
    assert_eq!(
        config["trust"]["keyless"].as_sequence().map(Vec::len),
        Some(2)
    );
}

#[test]
fn image_signature_rules_list_the_mounted_keys_of_each_rule() {
    let case = MATRIX
        .iter()
        .find(|c| c.name == "image signature rules")
        .expect("the image signature case");
    let objects = documents(&render(case));
    let config: Value = serde_yaml_ng::from_str(&rendered_config(&objects)).expect("YAML");
    let rules = config["trust"]["image_signatures"]
        .as_sequence()
        .expect("trust.image_signatures");
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(rules[0]["images"][0].as_str(), Some("quay.io/acme/*"));
    assert_eq!(rules[0]["policy"].as_str(), Some("require"));
    assert_eq!(
        rules[0]["keys"][0].as_str(),
        Some("/etc/airlock/image-keys/0"),
        "{rules:?}"
    );
    assert_eq!(rules[1]["policy"].as_str(), Some("ignore"));
    assert!(rules[1].get("keys").is_none(), "{rules:?}");
    let pod = &find(&objects, "Deployment")[0]["spec"]["template"]["spec"];
    let volume = read_only_mount(pod, "/etc/airlock/image-keys/0");
    assert_eq!(
        volume["configMap"]["name"].as_str(),
        Some("acme-image-keys"),
        "{volume:?}"
    );
}

#[test]
fn the_chart_readme_describes_every_value() {
    let values: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml is YAML");
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).expect("README.md");
    let mut missing = Vec::new();
    let mut leaves = Vec::new();
    collect_leaves("", &values, &mut leaves);
    for key in leaves {
        // A map of free-form settings is described as a whole.
        let described = key
            .match_indices('.')
            .map(|(i, _)| &key[..i])
            .chain(std::iter::once(key.as_str()))
            .any(|prefix| readme.contains(&format!("| `{prefix}` |")));
        if !described {
            missing.push(key);
        }
    }
    assert!(
        missing.is_empty(),
        "not in helm/airlock/README.md: {missing:?}"
    );
}

fn collect_leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value.as_mapping() {
        Some(map) if !map.is_empty() => {
            for (key, inner) in map {
                let key = key.as_str().unwrap_or_default();
                let path = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
                collect_leaves(&path, inner, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}
