//! storage-s3 against a real S3 server (SeaweedFS with signature checks, started by
//! `scripts/test-all.sh`), loaded as ferry loads it: from the built plugin library.

use orchestrator_core::store::conformance;
use test_support::check;
use test_support::{open_plugin_store, s3_settings, unique_prefix};

#[test]
fn passes_the_conformance_suite() {
    let store =
        open_plugin_store("storage-s3", s3_settings(&unique_prefix("conformance"))).unwrap();
    conformance::run_all(&store);
}

#[test]
fn wrong_credentials_missing_buckets_and_dead_endpoints_say_what_to_fix() {
    let mut settings = s3_settings(&unique_prefix("errors"));
    settings["secret_access_key"] = "wrong-secret-marker".into();
    settings["max_retries"] = 0.into();
    let store = open_plugin_store("storage-s3", settings.clone()).unwrap();
    let failure = check::probe(&store).unwrap_err();
    assert!(
        failure.hint.contains("refused the credentials"),
        "{failure}: {}",
        failure.hint
    );
    assert!(
        !failure.to_string().contains("wrong-secret-marker"),
        "secret in error: {failure}"
    );

    let mut settings = s3_settings(&unique_prefix("errors"));
    settings["url"] = "s3://no-such-bucket-ferry/x".into();
    settings["max_retries"] = 0.into();
    let store = open_plugin_store("storage-s3", settings).unwrap();
    let failure = check::probe(&store).unwrap_err();
    assert!(
        failure
            .hint
            .contains("bucket (or container) does not exist"),
        "{failure}: {}",
        failure.hint
    );

    let mut settings = s3_settings(&unique_prefix("errors"));
    settings["endpoint"] = "http://127.0.0.1:9".into();
    settings["max_retries"] = 0.into();
    let store = open_plugin_store("storage-s3", settings).unwrap();
    let failure = check::probe(&store).unwrap_err();
    assert!(
        failure.hint.contains("cannot reach the store"),
        "{failure}: {}",
        failure.hint
    );
}

#[test]
fn unknown_settings_are_refused_when_the_stack_opens() {
    let mut settings = s3_settings("x");
    settings["acess_key_id"] = "typo".into();
    let error = open_plugin_store("storage-s3", settings).err().unwrap();
    assert!(error.contains("did you mean `access_key_id`"), "{error}");
}
