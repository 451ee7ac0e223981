//! Python and JavaScript modules end to end: `berth new --lang` → `build`
//! (the pinned componentize-py / componentize-js, installed on first use
//! into a toolchain folder shared by test runs) → `deploy` → `invoke`, with
//! the base's key-value store called from the guest, and `berth dev`
//! redeploying a saved Python module; and the one-line error when `python3`
//! or `node` is missing.

use std::process::{Command, Stdio};

use crate::support::{
    BERTH, BaseProcess, berth, edit, failure, lines, stdout, wait_for, work_dir, work_root,
};

/// `berth ARGS` with the toolchains under the shared test work folder.
fn with_toolchains(mut cmd: assert_cmd::Command) -> assert_cmd::Command {
    cmd.env("BERTH_TOOLCHAINS", work_root().join("toolchains"));
    cmd
}

/// new → build → deploy → invoke twice (the counter lives in the base's
/// kv); returns the base, the work folder and the module's folder.
fn round_trip(
    lang: &str,
    name: &str,
    entry: &str,
    greeting: &str,
) -> (BaseProcess, tempfile::TempDir, std::path::PathBuf) {
    let base = BaseProcess::start();
    let work = work_dir();
    let dir = work.path().join(name);
    let dir_s = dir.to_str().unwrap();

    let out = stdout(berth(&["new", name, "--lang", lang, "--dir", dir_s]));
    assert!(out.contains(&format!("created module `{name}`")), "{out}");
    for file in [
        "berth.toml",
        entry,
        "wit/world.wit",
        "wit/deps/berth-base.wit",
    ] {
        assert!(dir.join(file).exists(), "{file} missing");
    }

    let out = stdout(with_toolchains(berth(&["build", dir_s])));
    assert!(
        out.contains(&format!("built {name}@0.1.0")) && out.contains("sha256:"),
        "{out}"
    );
    let artifact = dir.join("build").join(format!("{name}.wasm"));
    assert!(
        std::fs::metadata(&artifact).unwrap().len() > 1 << 20,
        "{}",
        artifact.display()
    );

    let out = stdout(with_toolchains(base.berth(&["deploy", dir_s])));
    assert!(out.contains(&format!("deployed {name}@0.1.0")), "{out}");
    for hits in 1..=2 {
        let out = stdout(base.berth(&["invoke", name, "--path", "/x?y=1"]));
        assert_eq!(
            out,
            format!("Hello from {name} ({greeting})! You asked for /{name}/x?y=1; hits: {hits}\n")
        );
    }
    let status = stdout(base.berth(&["status", name]));
    assert!(status.contains("requests     2 (0 failed)"), "{status}");
    assert!(status.contains("code         "), "{status}");
    (base, work, dir)
}

#[test]
fn python_module_new_build_deploy_invoke_with_kv_then_dev() {
    let (base, _work, dir) = round_trip("python", "greeter-py", "app.py", "Python");

    // berth dev: the first deploy reuses the up-to-date build; a save is
    // rebuilt with componentize-py and serves.
    let mut dev = Command::new(BERTH)
        .args(["dev", dir.to_str().unwrap(), "--base", &base.ops])
        .env("BERTH_TOOLCHAINS", work_root().join("toolchains"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dev_lines = lines(&mut dev);
    wait_for(&dev_lines, "deployed greeter-py@0.1.0-dev.");
    edit(&dir.join("app.py"), "\"Hello\"", "\"Howdy\"");
    let line = wait_for(&dev_lines, "redeployed greeter-py@0.1.0-dev.");
    assert!(line.contains("ms after the save (excluding"), "{line}");
    let out = stdout(base.berth(&["invoke", "greeter-py"]));
    assert!(
        out.starts_with("Howdy from greeter-py (Python)! You asked for /greeter-py; hits: "),
        "{out}"
    );
    let _ = dev.kill();
    let _ = dev.wait();
}

#[test]
fn js_module_new_build_deploy_invoke_with_kv() {
    round_trip("js", "greeter-js", "app.js", "JavaScript");
}

#[test]
fn a_missing_python3_or_node_names_the_package_to_install() {
    let work = work_dir();
    let empty_path = work.path().join("bin");
    std::fs::create_dir(&empty_path).unwrap();
    for (lang, program, package) in [("python", "python3", "python3"), ("js", "node", "nodejs")] {
        let dir = work.path().join(lang);
        let dir_s = dir.to_str().unwrap();
        stdout(berth(&["new", "m", "--lang", lang, "--dir", dir_s]));
        let mut build = berth(&["build", dir_s]);
        build
            .env("PATH", &empty_path)
            .env("BERTH_TOOLCHAINS", work.path().join("toolchains"));
        let err = failure(build);
        assert!(
            err.contains(&format!("`{program}` is not installed"))
                && err.contains(&format!("apt-get install {package}")),
            "{err}"
        );
    }
}

#[test]
fn new_refuses_the_json_template_for_python() {
    let work = work_dir();
    let dir = work.path().join("p");
    let err = failure(berth(&[
        "new",
        "p",
        "--lang",
        "python",
        "--template",
        "json",
        "--dir",
        dir.to_str().unwrap(),
    ]));
    assert!(
        err.contains("json template is for Rust modules only"),
        "{err}"
    );
    assert!(!dir.exists());
}

/// `berth base --tiers` (the compilers behind a cold install) takes only the
/// three lists it documents.
#[test]
fn base_refuses_a_tier_list_it_does_not_know() {
    for bad in ["winch,winch", "cranelift,winch", "llvm"] {
        let err = failure(berth(&["base", "--tiers", bad]));
        assert!(
            err.contains(&format!("`{bad}` is not a tier list"))
                && err.contains("`winch,cranelift`")
                && err.contains("`cranelift`")
                && err.contains("`winch`"),
            "{err}"
        );
    }
}
