//! storage-gcs against a GCS XML-API server (SeaweedFS's, as ../shared/TESTING.md describes;
//! no GCS emulator installable here works with object_store), loaded from the built plugin.
//! ferry's store contract needs no server-side copy or generation preconditions, which that
//! server does not implement faithfully.

use orchestrator_core::store::conformance;
use test_support::{gcs_settings, open_plugin_store, unique_prefix};

#[test]
fn passes_the_conformance_suite() {
    let store =
        open_plugin_store("storage-gcs", gcs_settings(&unique_prefix("conformance"))).unwrap();
    conformance::run_all(&store);
}

#[test]
fn a_missing_service_account_file_is_a_clear_error() {
    let mut settings = gcs_settings("x");
    settings["service_account"] = "/nonexistent/service-account.json".into();
    let error = open_plugin_store("storage-gcs", settings).err().unwrap();
    assert!(error.contains("service-account.json"), "{error}");
}
