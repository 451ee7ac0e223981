//! The installed set survives a restart, loaded from the compile cache.

use berth_example_modules::{ECHO, HELLO};

use crate::support::TestBase;

#[tokio::test]
async fn a_restarted_base_serves_the_same_modules_from_the_cache() {
    let mut base = TestBase::start().await;
    base.install_path("hello", "1.0.0", HELLO).await;
    base.install_path("echo", "1.0.0", ECHO).await;
    base.install_path("echo", "2.0.0", HELLO).await; // echo@2 (hello's bytes) active, echo@1 inactive
    let before = base.list().await;

    // Remove the stored artifacts: if the restart still loads, it used the
    // precompiled code and did not recompile.
    std::fs::remove_dir_all(base.data_dir.path().join("cache/artifacts")).unwrap();
    base.restart().await;

    assert_eq!(base.list().await, before);
    base.assert_hello_serves().await;
    let (status, headers, _) = base.get("/echo").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-berth-module"], "echo@2.0.0");
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
