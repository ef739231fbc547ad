//! The protocol core stays sans-IO: no async runtime, no sockets, no clock reads.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/core") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_never_mentions_tokio_sockets_or_the_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 10,
        "found only {} files under src/core",
        files.len()
    );
    let forbidden = [
        "tokio",
        "mio::",
        "UdpSocket",
        "TcpStream",
        "Instant::now",
        "SystemTime::now",
        "std::thread",
    ];
    for file in files {
        let source = std::fs::read_to_string(&file).expect("read source");
        // Only non-test code counts: comments may say what the core avoids, and unit
        // tests (the `#[cfg(test)]` module closing each file) may read the clock.
        let code = source.split("#[cfg(test)]").next().unwrap_or("");
        let text: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for word in forbidden {
            assert!(!text.contains(word), "{} mentions `{word}`", file.display());
        }
    }
}
