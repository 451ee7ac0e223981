//! Builds the guest modules in `modules/` for `wasm32-wasip2` (release) and
//! writes `modules.rs` into `OUT_DIR` with one constant per module naming the
//! built `.wasm` file, so tests, benchmarks and `berth up` never depend on a
//! hand-copied artifact.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Every module in `modules/`, as (package name, kind); keep in sync with `modules/Cargo.toml`.
const MODULES: &[(&str, Kind)] = &[
    ("hello", Kind::Lib),
    ("echo", Kind::Lib),
    ("panic", Kind::Lib),
    ("spin", Kind::Lib),
    ("hog", Kind::Lib),
    ("counter", Kind::Lib),
    ("gateway", Kind::Lib),
    ("cli-hello", Kind::Bin),
    // Imports `berth:sql/query` (examples/sql-base): refused by a plain base.
    ("sql-notes", Kind::Lib),
    // Imports `berth:missing/ledger`, which no base offers: `unsupported_import`.
    ("wants-missing", Kind::Lib),
];

#[derive(Clone, Copy)]
enum Kind {
    Lib,
    Bin,
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let modules_dir = manifest_dir.join("../../modules").canonicalize().unwrap();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    // One target dir shared by every profile of the host build: the guests are always release.
    let target_dir = workspace_target_dir(&out_dir).join("wasm-modules");

    println!("cargo:rerun-if-changed={}", modules_dir.display());
    // The guest helper crate and the WIT it binds are built into the modules too.
    for shared in ["../guest", "../../wit", "../../examples/sql-base/wit"] {
        println!(
            "cargo:rerun-if-changed={}",
            manifest_dir.join(shared).display()
        );
    }

    ensure_wasm_target();
    guest_build(&modules_dir, &target_dir, &[]);
    // hello again with its `v2` feature: a second version of the same package.
    let v2_dir = target_dir.join("hello-v2");
    guest_build(&modules_dir, &v2_dir, &["-p", "hello", "--features", "v2"]);

    let wasm_dir = target_dir.join("wasm32-wasip2/release");
    let mut generated = String::new();
    for (name, kind) in MODULES {
        let file = match kind {
            Kind::Lib => format!("{}.wasm", name.replace('-', "_")),
            Kind::Bin => format!("{name}.wasm"),
        };
        let path = wasm_dir.join(file);
        assert!(
            path.exists(),
            "expected guest artifact {} after the build",
            path.display()
        );
        let ident = name.replace('-', "_").to_uppercase();
        let path = path.display().to_string();
        generated.push_str(&format!(
            "/// Path of the built `{name}` module (`modules/{name}`).\n\
             pub const {ident}: &str = {path:?};\n\
             /// The bytes of the built `{name}` module, embedded in the binary.\n\
             pub const {ident}_BYTES: &[u8] = include_bytes!({path:?});\n",
        ));
    }
    let v2 = v2_dir
        .join("wasm32-wasip2/release/hello.wasm")
        .display()
        .to_string();
    generated.push_str(&format!(
        "/// Path of `hello` built with its `v2` feature (another greeting).\n\
         pub const HELLO_V2: &str = {v2:?};\n"
    ));
    std::fs::write(out_dir.join("modules.rs"), generated).unwrap();
}

/// `cargo build --release --target wasm32-wasip2 EXTRA` in `modules_dir`.
fn guest_build(modules_dir: &std::path::Path, target_dir: &std::path::Path, extra: &[&str]) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(modules_dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(target_dir)
        .args(extra);
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("failed to run cargo for the guest modules");
    if !status.success() {
        panic!(
            "building the guest modules in {} for wasm32-wasip2 failed (see above). \
             If the target is missing, run `rustup toolchain install` in the repository root \
             (rust-toolchain.toml lists wasm32-wasip2) or `rustup target add wasm32-wasip2`.",
            modules_dir.display()
        );
    }
}

/// Adds the `wasm32-wasip2` target to the active toolchain if it is missing.
///
/// `rustup toolchain install` in the repository root installs it (it is
/// listed in `rust-toolchain.toml`), but a plain `cargo` call on a machine
/// that already had the toolchain does not; this makes `cargo test` on a
/// fresh clone work either way.
fn ensure_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.as_deref().is_some_and(has_std) {
        return;
    }
    println!(
        "cargo:warning=the wasm32-wasip2 target is missing; running `rustup target add wasm32-wasip2`"
    );
    let added = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
        .is_ok_and(|s| s.success());
    if !added {
        panic!(
            "the wasm32-wasip2 target is not installed and `rustup target add wasm32-wasip2` failed; \
             run `rustup toolchain install` in the repository root"
        );
    }
}

/// Whether `dir` holds a std rlib (its file name carries a hash).
fn has_std(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
    })
}

/// `OUT_DIR` is `<target>/<profile>/build/<pkg>-<hash>/out`; walk up to `<target>`.
fn workspace_target_dir(out_dir: &std::path::Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(4)
        .map(PathBuf::from)
        .unwrap_or_else(|| out_dir.to_path_buf())
}
