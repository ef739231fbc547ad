//! The Helm chart, `deploy/helm/ferroturn`, checked with what these machines can install
//! (scripts/install-test-deps.sh puts both in a virtualenv of their own):
//!
//! - Helm 3.17 itself: `helm lint --strict` and `helm template` on several sets of
//!   values, including the chart's JSON schema and its own refusals;
//! - kubernetes-validate: every rendered object against the Kubernetes API's schemas for
//!   the oldest version the chart supports (1.25) and the newest the tool knows (1.37),
//!   strictly (an unknown field fails);
//! - what the pods would run, run for real: the init container's command puts the
//!   Secret's and the ConfigMap's files together, and the container's command line, with
//!   `$(HOST_IP)` and `$(NODE_NAME)` expanded as the kubelet does, starts two nodes on
//!   127.0.0.2 and 127.0.0.3 sharing a real Redis.
//!
//! Not checked, for want of a cluster: scheduling, the kubelet's probes and SIGTERM,
//! host networking itself, the PodDisruptionBudget at work, the images.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The virtualenv scripts/install-test-deps.sh installs Helm and kubernetes-validate in.
const TOOLS: &str = "/usr/local/lib/ferroturn-test-tools/bin";
/// The Kubernetes versions the manifests are validated against: the chart's oldest
/// (`kubeVersion` in Chart.yaml) and the newest kubernetes-validate knows.
const KUBERNETES: [&str; 2] = ["1.25.0", "1.37.0"];

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/ferroturn")
}

fn tool(name: &str) -> PathBuf {
    let path = Path::new(TOOLS).join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        path.display()
    );
    path
}

fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let mut pipe = child.stdin.take().expect("stdin piped");
    pipe.write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(pipe);
    child.wait_with_output().expect("the tool runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm lint --strict` and `helm template` with `values` (YAML); the manifests.
fn render(values: &str) -> Result<String, String> {
    let dir = TempDir::new("helm-values");
    let file = dir.join("values.yaml");
    std::fs::write(&file, values).expect("write values");
    let chart = chart();
    let (chart, file) = (chart.to_str().unwrap(), file.to_str().unwrap());
    let lint = run(
        &tool("helm"),
        &["lint", "--strict", chart, "-f", file],
        None,
    );
    let template = run(
        &tool("helm"),
        &["template", "turn", chart, "--namespace", "rtc", "-f", file],
        None,
    );
    match (lint.status.success(), template.status.success()) {
        (true, true) => Ok(text(&template.stdout)),
        (false, _) => Err(text(&lint.stdout) + &text(&lint.stderr)),
        (true, false) => Err(text(&template.stderr)),
    }
}

/// The manifests as JSON objects (through PyYAML in the tools' virtualenv).
fn parse(manifests: &str) -> Vec<Value> {
    let out = run(
        &tool("python"),
        &[
            "-c",
            "import json, sys, yaml\n\
             print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ],
        Some(manifests),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from PyYAML")
}

/// Whether kubernetes-validate passes every object of `manifests` for `version`; its
/// report.
fn validate(manifests: &str, version: &str) -> (bool, String) {
    let out = run(
        &tool("kubernetes-validate"),
        &["--strict", "--kubernetes-version", version, "-"],
        Some(manifests),
    );
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

fn find<'a>(objects: &'a [Value], kind: &str, component: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && (component.is_empty()
                    || o["metadata"]["labels"]["app.kubernetes.io/component"] == component
                    || o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                        == component)
        })
        .unwrap_or_else(|| panic!("no {kind} {component} among {objects:#?}"))
}

/// Whether `selector` (matchLabels) selects a pod with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .expect("matchLabels")
        .iter()
        .all(|(k, v)| &labels[k] == v)
}

const FLEET_VALUES: &str = r#"
publicAddress: { mode: stun, stunServers: ["stun1.example.net", "stun2.example.org:3478"] }
ports: { listening: 3478, tls: 443, minRelay: 49152, maxRelay: 65535 }
tls: { secretName: turn-example-com }
redis: { deploy: true }
reserveRelayPorts: true
drainTimeout: 120
config: |
  realm = "turn.example.com"
  user-quota = 10
  [[api-key]]
  sha256 = "57888d36c4bb8679dc293f271f58b485e8485828a3ca1911187ddcb804306683"
  max-ttl = 3600
secretConfig: |
  static-auth-secret = ["s3cret"]
"#;

/// The values sets every check runs on: the defaults, a fleet with TLS on 443 and the
/// chart's own Redis, and an operator's Secret with an outside Redis and the kernel fast
/// path.
const VALUE_SETS: [&str; 3] = [
    "{}",
    FLEET_VALUES,
    r#"
existingSecret: ferroturn-secrets
redis: { url: "redis://redis.example:6379/0" }
kernelOffload: true
api: { listen: "$(HOST_IP):9478" }
publicAddress: { mode: none }
"#,
];

/// Every values set lints, renders, and gives objects that the Kubernetes schemas
/// accept strictly; the same validator refuses an object with a field Kubernetes does
/// not have, so a pass means something.
#[test]
fn the_chart_renders_objects_the_kubernetes_schemas_accept() {
    for values in VALUE_SETS {
        let manifests = render(values).unwrap_or_else(|e| panic!("{values}: {e}"));
        for version in KUBERNETES {
            let (ok, report) = validate(&manifests, version);
            assert!(ok, "Kubernetes {version}, values {values}:\n{report}");
            assert!(report.contains("daemonset/turn-ferroturn"), "{report}");
        }
    }

    let manifests = render(FLEET_VALUES).unwrap();
    let broken = manifests.replacen(
        "hostNetwork: true",
        "hostNetwork: true\n      hostNetwrok: true",
        1,
    );
    assert_ne!(broken, manifests);
    let (ok, report) = validate(&broken, KUBERNETES[1]);
    assert!(!ok, "an unknown field passed:\n{report}");
}

/// Values that cannot work are refused at `helm template`/`helm lint`, with a reason.
#[test]
fn the_chart_refuses_values_that_cannot_work() {
    let refused = [
        (
            "secretConfig: |\n  [[api-key]]\n  sha256 = \"00\"\n",
            "top-level keys only",
        ),
        (
            "secretConfig: |\n  nonce-secret = [\"x\"]\n",
            "nonce-secret and redis come from",
        ),
        ("ports: { tls: 443 }\n", "tls.secretName must name"),
        (
            "redis: { deploy: true, url: \"redis://r:6379\" }\n",
            "set one of them",
        ),
        (
            "ports: { minRelay: 60000, maxRelay: 50000 }\n",
            "minRelay must not be above",
        ),
        ("api: { listen: \"localhost\" }\n", "api.listen"),
        ("publicAddress: { mode: nodeport }\n", "publicAddress.mode"),
        ("publicAddress: { mode: stun }\n", "stunServers must name"),
        ("sharedStateFailure: maybe\n", "sharedStateFailure"),
        ("redis: { password: \"a@b\" }\n", "redis.password"),
        ("drainTimout: 30\n", "drainTimout"),
    ];
    for (values, reason) in refused {
        match render(values) {
            Ok(_) => panic!("rendered: {values}"),
            Err(e) => assert!(e.contains(reason), "{values}: {e}"),
        }
    }
}

/// The objects hold what a fleet on Kubernetes needs.
#[test]
fn the_daemonset_is_what_a_fleet_needs() {
    let objects = parse(&render(FLEET_VALUES).unwrap());
    let ds = find(&objects, "DaemonSet", "relay");
    let pod = &ds["spec"]["template"];
    let spec = &pod["spec"];
    let container = &spec["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();

    // Host networking, cluster DNS from it, and the node's address as the relay's.
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(env("HOST_IP"), Some(Value::from("status.hostIP")));
    assert_eq!(env("NODE_NAME"), Some(Value::from("spec.nodeName")));
    assert!(args.contains(&"--relay-ip=$(HOST_IP)"), "{args:?}");
    assert!(args.contains(&"--node-name=$(NODE_NAME)"), "{args:?}");
    assert!(args.contains(&"--external-ip=auto"), "{args:?}");
    assert!(
        args.contains(&"--external-ip-stun-servers=stun2.example.org:3478"),
        "{args:?}"
    );
    assert_eq!(spec["nodeSelector"]["ferroturn.io/relay"], "true");

    // SIGTERM drains: the grace period outlasts drain-timeout; readiness is /readyz.
    let drain: i64 = args
        .iter()
        .find_map(|a| a.strip_prefix("--drain-timeout="))
        .expect("--drain-timeout")
        .parse()
        .unwrap();
    assert_eq!(drain, 120);
    assert!(spec["terminationGracePeriodSeconds"].as_i64().unwrap() > drain);
    let readiness = &container["readinessProbe"]["httpGet"];
    assert_eq!(readiness["path"], "/readyz");
    let api_port = args
        .iter()
        .find_map(|a| a.strip_prefix("--api-listen="))
        .and_then(|a| a.rsplit(':').next())
        .unwrap();
    assert_eq!(readiness["port"].to_string(), api_port);
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );

    // TLS on 443: the certificate Secret mounted, the capability to bind below 1024.
    assert!(args.contains(&"--tls-listening-port=443"), "{args:?}");
    assert!(
        args.contains(&"--cert=/etc/ferroturn/tls/tls.crt"),
        "{args:?}"
    );
    let sc = &container["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["NET_BIND_SERVICE"])
    );
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    let volumes = spec["volumes"].as_array().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap();
    assert_eq!(volume("tls")["secret"]["secretName"], "turn-example-com");

    // Configuration: the ConfigMap and the Secret the pod mounts are the chart's.
    let config_map = find(&objects, "ConfigMap", "");
    let secret = find(&objects, "Secret", "");
    assert_eq!(
        volume("config")["configMap"]["name"],
        config_map["metadata"]["name"]
    );
    assert_eq!(
        volume("secret")["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    let secrets_toml = secret["stringData"]["secrets.toml"].as_str().unwrap();
    assert!(secrets_toml.contains("static-auth-secret = [\"s3cret\"]"));
    assert!(
        !config_map["data"]["turnserver.toml"]
            .as_str()
            .unwrap()
            .contains("s3cret")
    );

    // The chart's Redis: the URL in the Secret names its Service, with the password its
    // pod reads from the same Secret.
    let redis = find(&objects, "Deployment", "redis");
    let service = find(&objects, "Service", "redis");
    let password = secret["stringData"]["redis-password"].as_str().unwrap();
    assert!(password.len() >= 32, "{password}");
    let url = format!(
        "redis = \"redis://:{password}@{}.rtc.svc:6379/0\"",
        service["metadata"]["name"].as_str().unwrap()
    );
    assert!(secrets_toml.contains(&url), "{secrets_toml}");
    let redis_env = &redis["spec"]["template"]["spec"]["containers"][0]["env"][0];
    assert_eq!(
        redis_env["valueFrom"]["secretKeyRef"]["name"],
        secret["metadata"]["name"]
    );
    assert_eq!(
        redis_env["valueFrom"]["secretKeyRef"]["key"],
        "redis-password"
    );
    assert!(selects(
        &service["spec"]["selector"],
        &redis["spec"]["template"]["metadata"]["labels"]
    ));

    // Selectors: the DaemonSet and the budget select the relay pods, never Redis's.
    let pdb = find(&objects, "PodDisruptionBudget", "");
    let relay_labels = &pod["metadata"]["labels"];
    let redis_labels = &redis["spec"]["template"]["metadata"]["labels"];
    for selector in [
        &ds["spec"]["selector"]["matchLabels"],
        &pdb["spec"]["selector"]["matchLabels"],
    ] {
        assert!(selects(selector, relay_labels));
        assert!(!selects(selector, redis_labels));
    }
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);

    // A changed configuration rolls the pods; an unchanged one does not.
    let checksum = |values: &str| {
        let objects = parse(&render(values).unwrap());
        find(&objects, "DaemonSet", "relay")["spec"]["template"]["metadata"]["annotations"]
            ["checksum/config"]
            .clone()
    };
    assert_eq!(checksum(FLEET_VALUES), checksum(FLEET_VALUES));
    assert_ne!(
        checksum(FLEET_VALUES),
        checksum(&FLEET_VALUES.replace("user-quota = 10", "user-quota = 11"))
    );
}

/// One pod as the kubelet would run it, outside Kubernetes: the files of its volumes in
/// a directory of its own, the init container's command, then the server's command line.
struct Pod {
    child: ChildGuard,
    host_ip: String,
    _dir: TempDir,
}

impl Pod {
    fn start(objects: &[Value], host_ip: &str, node_name: &str) -> Pod {
        let dir = TempDir::new("helm-pod");
        let root = dir.path().to_str().unwrap().to_owned();
        let relocate = |s: &str| {
            s.replace("/etc/ferroturn/", &format!("{root}/etc/ferroturn/"))
                .replace("/run/ferroturn/", &format!("{root}/run/ferroturn/"))
                .replace("$(HOST_IP)", host_ip)
                .replace("$(NODE_NAME)", node_name)
        };
        let spec = &find(objects, "DaemonSet", "relay")["spec"]["template"]["spec"];
        // The volumes, as Kubernetes mounts them.
        let secret = find(objects, "Secret", "");
        let config_map = find(objects, "ConfigMap", "");
        for (dir_name, file, content) in [
            (
                "secret",
                "secrets.toml",
                &secret["stringData"]["secrets.toml"],
            ),
            (
                "config",
                "turnserver.toml",
                &config_map["data"]["turnserver.toml"],
            ),
        ] {
            let path = dir.join(&format!("etc/ferroturn/{dir_name}"));
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join(file), content.as_str().unwrap()).unwrap();
        }
        std::fs::create_dir_all(dir.join("run/ferroturn")).unwrap();

        let init = &spec["initContainers"][0];
        assert_eq!(init["name"], "config");
        let command: Vec<String> = init["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| relocate(c.as_str().unwrap()))
            .collect();
        let status = Command::new(&command[0])
            .args(&command[1..])
            .status()
            .expect("the init container's command runs");
        assert!(status.success(), "{command:?}");

        let container = &spec["containers"][0];
        assert_eq!(container["command"][0], "/usr/bin/ferroturn");
        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| relocate(a.as_str().unwrap()))
            .collect();
        let mut command = Command::new(common::process::BIN);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Pod {
            child: ChildGuard::spawn(&mut command, "cargo builds it for the tests"),
            host_ip: host_ip.to_owned(),
            _dir: dir,
        }
    }

    fn api(&self, port: u16) -> SocketAddr {
        SocketAddr::new(ip(&self.host_ip), port)
    }
}

/// The HTTP status of `path` at `addr`, or 0 when nothing listens there.
async fn status(addr: SocketAddr, path: &str) -> u16 {
    match tokio::net::TcpStream::connect(addr).await {
        Ok(stream) => {
            common::http::exchange(stream, "GET", path, &[])
                .await
                .status
        }
        Err(_) => 0,
    }
}

/// The chart's pods, run as rendered with an outside Redis, make a fleet: both nodes
/// register under their node names, a nonce from one is good at the other (the chart's
/// generated `nonce-secret`), each relays on its own address (`$(HOST_IP)`), and
/// SIGTERM drains a node: not ready at once, new allocations sent to the live node, its
/// allocation served on until it ends, then a clean exit.
#[tokio::test]
async fn the_rendered_pods_run_as_a_fleet() {
    let redis = start_redis().await;
    let port = free_tcp_port("127.0.0.2");
    let api_port = free_tcp_port("127.0.0.2");
    let values = format!(
        r#"
ports: {{ listening: {port}, minRelay: 50000, maxRelay: 50999 }}
api: {{ listen: "$(HOST_IP):{api_port}" }}
drainTimeout: 30
redis: {{ url: "{}" }}
config: |
  realm = "{REALM}"
  allowed-peer-ip = ["127.0.0.0-127.255.255.255"]
  admin-key-sha256 = ["{}"]
secretConfig: |
  static-auth-secret = ["{SECRET}"]
"#,
        redis.url(),
        sha256_hex(ADMIN)
    );
    let manifests = render(&values).unwrap_or_else(|e| panic!("{e}"));
    let (ok, report) = validate(&manifests, KUBERNETES[1]);
    assert!(ok, "{report}");
    let objects = parse(&manifests);
    let mut a = Pod::start(&objects, "127.0.0.2", "node-a");
    let b = Pod::start(&objects, "127.0.0.3", "node-b");
    for pod in [&a, &b] {
        eventually(
            "/readyz",
            || status(pod.api(api_port), "/readyz"),
            |s| *s == 200,
        )
        .await;
    }

    eventually(
        "both nodes registered",
        || node_names_at(a.api(api_port)),
        |n| n == &["node-a", "node-b"],
    )
    .await;

    let (u, p) = rest_credentials(SECRET, "carol", Duration::from_secs(600));
    let node_a = SocketAddr::new(ip("127.0.0.2"), port);
    let node_b = SocketAddr::new(ip("127.0.0.3"), port);
    let mut s = Session::challenged(ip("127.0.0.1"), node_a, &u, &p).await;
    s.server = node_b;
    let msg = allocate_request(&s);
    let r = s.exchange(&msg).await.expect("an answer");
    assert!(is_success(&r), "B took A's nonce: {:?}", error_code(&r));

    let mut on_a = TurnClient::new(node_a, &u, &p).await.unwrap();
    let relayed = on_a.allocate().await.expect("an allocation on A");
    assert_eq!(relayed.ip(), ip("127.0.0.2"));
    assert!((50000..=50999).contains(&relayed.port()), "{relayed}");
    let mut on_b = TurnClient::new(node_b, &u, &p).await.unwrap();
    assert_eq!(
        on_b.allocate().await.expect("an allocation on B").ip(),
        ip("127.0.0.3")
    );

    // The kubelet's SIGTERM.
    a.child.signal(libc::SIGTERM);
    eventually(
        "A not ready",
        || status(a.api(api_port), "/readyz"),
        |s| *s == 503,
    )
    .await;
    let (u2, p2) = rest_credentials(SECRET, "dave", Duration::from_secs(600));
    let s = Session::challenged(ip("127.0.0.1"), node_a, &u2, &p2).await;
    // The drain reaches the registry on its next write (each second).
    let redirect = || {
        let s = &s;
        async move {
            let msg = allocate_request(s);
            let r = s.exchange(&msg).await.expect("an answer");
            let value = common::wire::attribute(&r, 0x8023).map(<[u8]>::to_vec);
            (error_code(&r), value)
        }
    };
    let (_, alternate) = eventually("300 Try Alternate", redirect, |(c, v)| {
        *c == Some(300) && v.is_some()
    })
    .await;
    let alternate = alternate.unwrap();
    assert_eq!(alternate[..4], [0, 1, (port >> 8) as u8, port as u8]);
    assert_eq!(alternate[4..8], [127, 0, 0, 3], "the live node");
    on_a.refresh(600)
        .await
        .expect("A serves its allocation while draining");
    assert!(a.child.exited().is_none(), "A waits for its allocation");
    on_a.refresh(0).await.expect("the allocation ends");
    let exit = a
        .child
        .exit_within(PROCESS_WAIT)
        .await
        .expect("A exits once drained");
    assert!(exit.success(), "{exit:?}");
    on_b.refresh(600).await.expect("B serves on");
}
