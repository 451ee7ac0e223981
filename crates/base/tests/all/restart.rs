//! The installed set survives a restart, loaded from the compile cache.

use berth_example_modules::{ECHO, HELLO};

use crate::support::TestBase;

#[tokio::test]
async fn a_restarted_base_serves_the_same_modules_from_the_cache() {
    let mut base = TestBase::start().await;
    base.install_path("hello", "1.0.0", HELLO).await;
    base.install_path("echo", "1.0.0", ECHO).await;
    base.install_path("echo", "2.0.0", HELLO).await; // echo@2 (hello's bytes) active, echo@1 inactive
    let before = without_recent(base.list().await);
    // A Winch-compiled module's code reaches the cache in the background,
    // after its install answered: wait for it before taking the artifacts
    // away.
    for module in &before.modules {
        base.wait_for_cached_code(&module.digest).await;
    }

    // Remove the stored artifacts: if the restart still loads, it used the
    // precompiled code and did not recompile.
    std::fs::remove_dir_all(base.data_dir.path().join("cache/artifacts")).unwrap();
    base.restart().await;

    assert_eq!(without_recent(base.list().await), before);
    base.assert_hello_serves().await;
    let (status, headers, _) = base.get("/echo").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-berth-module"], "echo@2.0.0");
}

/// `modules` without their recent-traffic window, which starts at the
/// process's install of each version and so differs after any restart, and
/// without their code tier, which moves from Winch to Cranelift in the
/// background.
fn without_recent(mut list: berth_api::ModuleList) -> berth_api::ModuleList {
    for module in &mut list.modules {
        module.recent = Default::default();
        module.tier = None;
    }
    list
}

#[tokio::test]
async fn a_module_whose_code_vanished_is_listed_as_failed_and_the_rest_serve() {
    let mut base = TestBase::start().await;
    base.install_path("hello", "1.0.0", HELLO).await;
    base.install_path("echo", "1.0.0", ECHO).await;
    let echo_digest = berth_runtime::Digest::of(&std::fs::read(ECHO).unwrap()).hex();
    for dir in ["cache/artifacts", "cache/compiled"] {
        for entry in std::fs::read_dir(base.data_dir.path().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&echo_digest)
            {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
    base.restart().await;
    base.assert_hello_serves().await;
    let echo = base
        .list()
        .await
        .modules
        .into_iter()
        .find(|m| m.name == "echo")
        .unwrap();
    assert_eq!(echo.state, berth_api::ModuleState::Failed);
    assert!(echo.error.unwrap().contains("install it again"));
    assert_eq!(base.get("/echo").await.0, 404);
}

/// Writers queue in the lifecycle (their redb commits run off the async
/// workers): concurrent installs and switches all commit, each exactly
/// once, and a restart finds what the ops API last reported.
#[tokio::test]
async fn concurrent_installs_and_switches_all_commit_and_survive_a_restart() {
    let mut base = TestBase::start().await;
    base.install_path("echo", "1", ECHO).await;
    let installs = (0..6).map(|i| {
        let base = &base;
        async move {
            let name = format!("m{i}");
            base.install_path(&name, "1", HELLO).await;
            base.install_path(&name, "2", ECHO).await;
        }
    });
    let switches = (0..6).map(|i| {
        let base = &base;
        async move {
            base.install_path("echo", &format!("1.{i}"), HELLO).await;
        }
    });
    futures::future::join(
        futures::future::join_all(installs),
        futures::future::join_all(switches),
    )
    .await;
    let before = base.list().await;
    assert_eq!(before.modules.len(), 1 + 6 + 12, "{before:?}");
    for i in 0..6 {
        let default: Vec<_> = before
            .modules
            .iter()
            .filter(|m| m.name == format!("m{i}") && m.state == berth_api::ModuleState::Active)
            .map(|m| m.version.as_str())
            .collect();
        assert_eq!(default, ["2"], "m{i}");
    }
    let echo_defaults = before
        .modules
        .iter()
        .filter(|m| m.name == "echo" && m.state == berth_api::ModuleState::Active)
        .count();
    assert_eq!(echo_defaults, 1, "exactly one default for echo");

    base.restart().await;
    let after = base.list().await;
    let shape = |list: &berth_api::ModuleList| {
        list.modules
            .iter()
            .map(|m| (m.name.clone(), m.version.clone(), m.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&after), shape(&before));
}
