//! Builds the kernel fast path's eBPF program (`src/offload/bpf/relay.bpf.c`) with clang
//! when this machine can. Where it cannot (no clang, no libbpf headers, not Linux) the
//! server still builds, without the program: `cfg(ferroturn_bpf)` stays unset and the
//! loader reports `FERROTURN_BPF_MISSING` as the reason kernel offload is unavailable.
//! `FERROTURN_BPF=required` turns that into a build error (for CI and packaging);
//! `CLANG` names another clang.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "src/offload/bpf/relay.bpf.c";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ferroturn_bpf)");
    println!("cargo::rerun-if-changed=src/offload/bpf");
    println!("cargo::rerun-if-env-changed=CLANG");
    println!("cargo::rerun-if-env-changed=FERROTURN_BPF");
    let Some(out_dir) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        println!("cargo::warning=OUT_DIR is not set");
        std::process::exit(1);
    };
    match build(&out_dir.join("relay.bpf.o")) {
        Ok(()) => println!("cargo::rustc-cfg=ferroturn_bpf"),
        Err(why) => {
            if env::var("FERROTURN_BPF").as_deref() == Ok("required") {
                println!("cargo::error=FERROTURN_BPF=required, but {why}");
                std::process::exit(1);
            }
            println!("cargo::warning=kernel offload unavailable: {why}");
            println!("cargo::rustc-env=FERROTURN_BPF_MISSING={why}");
        }
    }
}

fn build(object: &Path) -> Result<(), String> {
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return Err("built for a system other than Linux".into());
    }
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    if Command::new(&clang).arg("--version").output().is_err() {
        return Err("built without clang".into());
    }
    // The BPF target has the byte order of the machine the program runs on.
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb",
        _ => "bpfel",
    };
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-Wall", "-Werror", "-target", target, "-c"])
        .arg(SOURCE)
        .arg("-o")
        .arg(object);
    // <linux/types.h> includes <asm/types.h>, which Debian keeps under the multiarch
    // directory of the target.
    if let Some(dir) = multiarch_include() {
        cmd.arg("-I").arg(dir);
    }
    let output = cmd.output().map_err(|e| format!("running {clang}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or("no error message");
    Err(format!(
        "built without the eBPF program: clang failed (libbpf-dev installed?): {first}"
    ))
}

fn multiarch_include() -> Option<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let triple = match arch.as_str() {
        "x86" => "i386-linux-gnu".to_owned(),
        "arm" => "arm-linux-gnueabihf".to_owned(),
        "powerpc64" if env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() == Ok("little") => {
            "powerpc64le-linux-gnu".to_owned()
        }
        other => format!("{other}-linux-gnu"),
    };
    let dir = Path::new("/usr/include").join(triple);
    dir.is_dir().then_some(dir)
}
