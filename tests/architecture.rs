//! The layering the code promises, checked: the protocol core is its own crate with no
//! async runtime, socket or HTTP crate in its dependency tree and no unsafe code, it
//! reads no clock, and inside the server crate dependencies point one way.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of every `.rs` file under `dir` without comments and without the unit tests
/// closing each file (`#[cfg(test)]`), which may read the clock.
fn code_under(dir: &str) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&root().join(dir), &mut files);
    assert!(!files.is_empty(), "no source under {dir}");
    files
        .into_iter()
        .map(|file| {
            let source = std::fs::read_to_string(&file).expect("read source");
            let code = source.split("#[cfg(test)]").next().unwrap_or("");
            let text = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            (file, text)
        })
        .collect()
}

#[test]
fn core_reads_no_clock_and_touches_no_socket() {
    let forbidden = [
        "Instant::now",
        "SystemTime::now",
        "std::thread",
        "UdpSocket",
        "TcpStream",
        "thread_rng",
        "rand::rng()",
        "rand::random",
    ];
    let files = code_under("ferroturn-core/src");
    assert!(files.len() > 10, "found only {} core files", files.len());
    for (file, text) in files {
        for word in forbidden {
            assert!(!text.contains(word), "{} mentions `{word}`", file.display());
        }
    }
}

#[test]
fn core_forbids_unsafe_code() {
    let lib = std::fs::read_to_string(root().join("ferroturn-core/src/lib.rs")).unwrap();
    assert!(lib.contains("#![forbid(unsafe_code)]"));
}

/// Every crate in ferroturn-core's normal (non-dev, non-build) dependency tree for this
/// platform, each with the path of crate names that reaches it (`cargo tree`, from
/// Cargo.lock).
fn core_dependency_paths() -> Vec<(String, Vec<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "ferroturn-core",
            "-e",
            "normal",
            "--prefix",
            "depth",
            "--format",
            "{p}",
            "--no-dedupe",
            "--locked",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut stack: Vec<String> = Vec::new();
    let mut crates = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        let (Ok(depth), Some(name)) = (
            line[..digits].parse::<usize>(),
            line[digits..].split_whitespace().next(),
        ) else {
            continue;
        };
        stack.truncate(depth);
        stack.push(name.to_owned());
        crates.push((name.to_owned(), stack.clone()));
    }
    crates
}

#[test]
fn core_dependency_tree_has_no_runtime_socket_or_http_crate() {
    let crates = core_dependency_paths();
    assert_eq!(crates.first().map(|c| c.0.as_str()), Some("ferroturn-core"));
    assert!(
        crates.iter().any(|(n, _)| n == "stun-rs"),
        "core uses stun-rs"
    );
    for (name, path) in &crates {
        assert!(
            !matches!(
                name.as_str(),
                "tokio" | "mio" | "socket2" | "axum" | "hyper" | "hyper-util" | "dashmap"
            ),
            "ferroturn-core depends on {name}: {}",
            path.join(" -> ")
        );
        // stun-rs (a required dependency) brings libc in through rand 0.9's OS generator
        // and pest's stack guard; nothing of the core's own choosing may.
        if name == "libc" || name == "getrandom" {
            assert_eq!(
                path.get(1).map(String::as_str),
                Some("stun-rs"),
                "{name} reaches ferroturn-core other than through stun-rs: {}",
                path.join(" -> ")
            );
        }
    }
}

/// `(module, modules it must not use)`: main -> wiring (lib.rs) -> {net, api} ->
/// {fleet, webhook} -> control -> offload -> config -> core; `dtls` (OpenSSL sessions)
/// serves net and client and uses neither.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "src/control",
        &[
            "crate::net",
            "crate::api",
            "crate::fleet",
            "crate::webhook",
            "crate::start",
        ],
    ),
    ("src/fleet", &["crate::net", "crate::api", "crate::start"]),
    (
        "src/webhook.rs",
        &["crate::net", "crate::api", "crate::fleet", "crate::start"],
    ),
    (
        "src/offload",
        &[
            "crate::net",
            "crate::api",
            "crate::fleet",
            "crate::control",
            "crate::start",
        ],
    ),
    (
        "src/config",
        &[
            "crate::net",
            "crate::api",
            "crate::fleet",
            "crate::control",
            "crate::start",
        ],
    ),
    ("src/net", &["crate::api", "crate::fleet", "crate::webhook"]),
    (
        "src/dtls.rs",
        &[
            "crate::net",
            "crate::api",
            "crate::fleet",
            "crate::control",
            "crate::config",
            "crate::client",
            "crate::start",
        ],
    ),
    ("src/api", &["crate::net"]),
    (
        "src/external.rs",
        &["crate::net", "crate::api", "crate::fleet", "crate::start"],
    ),
    (
        "src/client",
        &[
            "crate::net",
            "crate::api",
            "crate::fleet",
            "crate::control",
            "crate::config",
        ],
    ),
];

#[test]
fn server_crate_dependencies_point_one_way() {
    for (dir, banned) in LAYERS {
        for (file, text) in code_under(dir) {
            for word in *banned {
                assert!(
                    !text.contains(word),
                    "{} uses `{word}`: dependencies point main -> wiring -> {{net, api}} -> fleet -> control -> offload -> config -> core",
                    file.display()
                );
            }
        }
    }
}
