//! `ferry stack check`: prove a store works by writing, reading back, listing and deleting a
//! probe object, timing each step, and turning failures into advice.

use std::time::{Duration, Instant};

use orchestrator_core::store::Store;
use orchestrator_core::{ErrorKind, PluginError};

/// One successful operation and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub operation: &'static str,
    pub took: Duration,
}

/// The first operation that failed, what the store said, and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed: {error}")]
pub struct CheckError {
    pub operation: &'static str,
    pub error: PluginError,
    pub hint: String,
}

/// Write, read back, list and delete a probe object under `ferry-check/`.
pub fn probe(store: &Store) -> Result<Vec<Timing>, CheckError> {
    let key = format!("ferry-check/{}", orchestrator_core::run::new_run_id());
    let body = format!("ferry store check {key}");
    let mut timings = Vec::new();
    let mut step = |operation: &'static str,
                    f: &mut dyn FnMut() -> Result<(), PluginError>|
     -> Result<(), CheckError> {
        let start = Instant::now();
        f().map_err(|error| CheckError {
            operation,
            hint: advice(&error),
            error,
        })?;
        timings.push(Timing {
            operation,
            took: start.elapsed(),
        });
        Ok(())
    };
    step("write", &mut || {
        store.put_bytes(&key, body.as_bytes()).map(drop)
    })?;
    step("read back", &mut || {
        let read = store.get_bytes(&key)?;
        if read != body.as_bytes() {
            return Err(PluginError::other(format!(
                "read {} bytes that differ from the {} written",
                read.len(),
                body.len()
            )));
        }
        Ok(())
    })?;
    step("list", &mut || {
        let listing = store.list("ferry-check", true)?;
        if !listing.objects.iter().any(|o| o.key == key) {
            return Err(PluginError::other(format!(
                "the probe `{key}` is missing from the listing of ferry-check/"
            )));
        }
        Ok(())
    })?;
    step("delete", &mut || {
        store.delete(&key)?;
        if store.head(&key)?.is_some() {
            return Err(PluginError::other(format!(
                "the probe `{key}` is still there after delete"
            )));
        }
        Ok(())
    })?;
    Ok(timings)
}

/// What to do about a store error, from its kind and the server's words.
pub fn advice(error: &PluginError) -> String {
    let message = error.message().to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| message.contains(w));
    if has(&[
        "nosuchbucket",
        "bucket does not exist",
        "containernotfound",
        "no such bucket",
    ]) {
        "the bucket (or container) does not exist: create it, or fix `bucket`/`url` in the stack's store settings"
            .into()
    } else if has(&[
        "authorizationheadermalformed",
        "permanentredirect",
        "wrong region",
        "region",
    ]) && has(&["region", "redirect"])
    {
        "the bucket lives in another region: set `region` in the stack's store settings".into()
    } else if error.kind == ErrorKind::UNAUTHENTICATED
        || error.kind == ErrorKind::PERMISSION_DENIED
        || has(&[
            "signaturedoesnotmatch",
            "invalidaccesskeyid",
            "accessdenied",
            "403 forbidden",
            "401 unauthorized",
            "unauthenticated",
            "invalid_grant",
        ])
    {
        "the store refused the credentials: check the access key and secret (or AWS_*/GOOGLE_*/AZURE_* variables) and the bucket's permissions".into()
    } else if has(&["timed out", "timeout", "deadline"]) && !has(&["connect"]) {
        "the store did not answer in time: raise `timeout` (and `retry_timeout`) in the stack's store settings, or check the network".into()
    } else if has(&[
        "connection refused",
        "error trying to connect",
        "dns error",
        "failed to lookup",
        "timed out",
        "timeout",
        "connect error",
        "unreachable",
    ]) {
        "cannot reach the store: check `endpoint` (and that the server runs), the network and any proxy".into()
    } else if error.kind == ErrorKind::INVALID_INPUT {
        "fix the stack's store settings (`ferry plugins inspect <plugin>` lists them)".into()
    } else {
        "run again with -v for details".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::MemoryStore;
    use orchestrator_core::sdk::{PluginConfig, StorePlugin};

    #[test]
    fn a_working_store_passes_every_step() {
        let store = Store::from_plugin(MemoryStore::new(PluginConfig::default()).unwrap());
        let timings = probe(&store).unwrap();
        let ops: Vec<_> = timings.iter().map(|t| t.operation).collect();
        assert_eq!(ops, ["write", "read back", "list", "delete"]);
        assert!(
            store.list("ferry-check", true).unwrap().objects.is_empty(),
            "cleaned up"
        );
    }

    #[test]
    fn advice_matches_the_failure() {
        let cases = [
            (
                "<Code>NoSuchBucket</Code>",
                "bucket (or container) does not exist",
            ),
            (
                "<Code>SignatureDoesNotMatch</Code>",
                "refused the credentials",
            ),
            (
                "error trying to connect: tcp connect error: Connection refused",
                "cannot reach",
            ),
            (
                "The specified container does not exist. <Code>ContainerNotFound</Code>",
                "container) does not exist",
            ),
            (
                "AuthorizationHeaderMalformed: the region 'us-east-1' is wrong",
                "another region",
            ),
            (
                "Client error with status 403 Forbidden: <Code>AccessDenied</Code>",
                "refused the credentials",
            ),
            // Digits in a key (run ids carry milliseconds) are not status codes.
            (
                "connect error for tests/20261127-141400-403-ab12cd-errors/x: Connection refused",
                "cannot reach",
            ),
        ];
        for (message, expected) in cases {
            let advice = advice(&PluginError::other(message));
            assert!(advice.contains(expected), "{message}: {advice}");
        }
    }
}
