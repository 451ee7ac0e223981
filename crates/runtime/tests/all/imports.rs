//! What a runtime offers modules, and a module importing more than that.

use berth_example_modules::{COUNTER, SQL_NOTES};
use berth_runtime::LoadError;

use crate::support::TestRuntime;

#[test]
fn the_runtime_reports_the_interfaces_its_capabilities_offer() {
    let rt = TestRuntime::new();
    assert_eq!(
        rt.runtime.interfaces(),
        vec![
            "berth:base/config@0.1.0",
            "berth:base/kv@0.1.0",
            "berth:base/log@0.1.0"
        ]
    );
}

#[test]
fn a_module_importing_an_interface_the_runtime_lacks_is_refused_naming_it() {
    let rt = TestRuntime::new();
    let error = rt
        .try_load(SQL_NOTES)
        .err()
        .expect("sql-notes imports berth:sql/query, which this runtime lacks");
    assert_eq!(error.code(), "unsupported_import");
    match &error {
        LoadError::UnsupportedImport { import, .. } => {
            assert_eq!(import, "berth:sql/query@0.1.0", "{error}")
        }
        other => panic!("expected UnsupportedImport, got {other:?}"),
    }
    assert!(
        error.to_string().contains("berth:sql/query@0.1.0"),
        "{error}"
    );
    // The runtime is unaffected: other modules still load.
    rt.try_load(COUNTER).expect("counter loads");
}
