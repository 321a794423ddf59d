//! Tests for layered configuration loading, one behaviour per test.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;
use tempfile::TempDir;

use super::*;

fn write(path: &Path, text: &str) -> PathBuf {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `--set` arguments as the CLI's parser hands them over: split at the first `=`.
fn sets(args: &[&str]) -> Vec<(String, String)> {
    args.iter()
        .map(|arg| {
            let (key, value) = arg.split_once('=').expect("a --set argument has `=`");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn project(text: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new().unwrap();
    let file = write(&dir.path().join(PROJECT_FILE), text);
    (dir, file)
}

fn load_project(text: &str) -> Result<Config> {
    let (dir, _) = project(text);
    ConfigLoader::new(dir.path()).load()
}

fn settings(config: &Config, stack: &str, part: &str) -> serde_json::Value {
    let stack = &config.stacks[stack];
    let component = if part == "store" {
        &stack.store
    } else {
        &stack.orchestrator
    };
    serde_json::Value::Object(component.settings.clone())
}

#[test]
fn no_file_at_all_gives_the_builtin_local_stack() {
    let dir = TempDir::new().unwrap();
    let config = ConfigLoader::new(dir.path())
        .user_config(Some(dir.path().join("absent.toml")))
        .load()
        .unwrap();
    assert_eq!(config.project_file, None);
    assert_eq!(config.user_file, None);
    assert_eq!(config.project_root, dir.path());
    assert_eq!(config.pipeline, dir.path().join("pipeline.yaml"));
    assert!(config.plugin_dirs.is_empty());
    let (name, stack) = config.stack(None).unwrap();
    assert_eq!(name, "local");
    assert_eq!(stack.orchestrator.plugin, "local");
    assert!(stack.orchestrator.settings.is_empty());
    assert_eq!(stack.store.plugin, "local");
    assert_eq!(
        settings(&config, "local", "store"),
        json!({"path": ".ferry/artifacts"})
    );
}

#[test]
fn project_file_is_found_from_a_nested_subdirectory() {
    let (dir, file) = project("pipeline = \"flows/main.yaml\"\n");
    let nested = dir.path().join("a/b/c");
    fs::create_dir_all(&nested).unwrap();
    assert_eq!(find_project_file(&nested), Some(file.clone()));
    let config = ConfigLoader::new(&nested).load().unwrap();
    assert_eq!(config.project_file, Some(file));
    assert_eq!(config.project_root, dir.path());
    assert_eq!(config.pipeline, dir.path().join("flows/main.yaml"));
}

#[test]
fn each_layer_overrides_the_one_below() {
    let dir = TempDir::new().unwrap();
    let user = write(
        &dir.path().join("user/config.toml"),
        r#"
stack = "user"
plugin_dirs = ["/opt/ferry/plugins"]
[stacks.user]
orchestrator = { plugin = "local" }
store = { plugin = "local" }
"#,
    );
    let root = dir.path().join("proj");
    write(
        &root.join(PROJECT_FILE),
        r#"
stack = "project"
[stacks.local]
orchestrator = { plugin = "local", settings = { parallelism = 2 } }
store = { plugin = "local" }
"#,
    );
    let base = || ConfigLoader::new(&root).user_config(Some(user.clone()));
    let parallelism = |c: &Config| c.stacks["local"].orchestrator.settings["parallelism"].clone();

    // Defaults alone.
    let c = ConfigLoader::new(dir.path()).load().unwrap();
    assert_eq!(c.default_stack, "local");

    // The user file beats the defaults.
    let c = ConfigLoader::new(dir.path())
        .user_config(Some(user.clone()))
        .load()
        .unwrap();
    assert_eq!(c.default_stack, "user");
    assert_eq!(c.user_file, Some(user.clone()));

    // The project file beats the user file, and keeps what it does not set.
    let c = base().load().unwrap();
    assert_eq!(c.default_stack, "project");
    assert_eq!(c.plugin_dirs, [PathBuf::from("/opt/ferry/plugins")]);
    assert!(c.stacks.contains_key("user"));
    assert_eq!(parallelism(&c), json!(2));

    // The environment beats the project file.
    let vars = env(&[
        ("FERRY_STACK", "env"),
        (
            "FERRY_STACKS__LOCAL__ORCHESTRATOR__SETTINGS__PARALLELISM",
            "3",
        ),
    ]);
    let c = base().env(vars.clone()).load().unwrap();
    assert_eq!(c.default_stack, "env");
    assert_eq!(parallelism(&c), json!(3));

    // --set beats the environment; the last --set wins.
    let c = base()
        .env(vars)
        .set(sets(&[
            "stack=first",
            "stack=set",
            "stacks.local.orchestrator.settings.parallelism=4",
        ]))
        .load()
        .unwrap();
    assert_eq!(c.default_stack, "set");
    assert_eq!(parallelism(&c), json!(4));
}

#[test]
fn a_file_stack_replaces_the_lower_one_while_env_and_set_patch_it() {
    let text = r#"
[stacks.local]
orchestrator = { plugin = "local" }
store = { plugin = "local" }
"#;
    let config = load_project(text).unwrap();
    assert!(config.stacks["local"].store.settings.is_empty());

    let dir = TempDir::new().unwrap();
    let config = ConfigLoader::new(dir.path())
        .env(env(&[(
            "FERRY_STACKS__LOCAL__STORE__SETTINGS__compress",
            "true",
        )]))
        .load()
        .unwrap();
    assert_eq!(
        settings(&config, "local", "store"),
        json!({"path": ".ferry/artifacts", "compress": true})
    );
}

#[test]
fn set_values_are_typed_as_toml_when_they_parse() {
    let dir = TempDir::new().unwrap();
    let config = ConfigLoader::new(dir.path())
        .set(sets(&[
            "stacks.local.orchestrator.settings.workers=2",
            "stacks.local.orchestrator.settings.ratio=0.5",
            "stacks.local.orchestrator.settings.debug=true",
            "stacks.local.orchestrator.settings.name=nightly run",
            "stacks.local.orchestrator.settings.quoted=\"42\"",
            "stacks.local.orchestrator.settings.limits={ cpu = 2, memory = \"4Gi\" }",
            "stacks.local.orchestrator.settings.tags=[\"a\", \"b\"]",
            "stacks.local.orchestrator.settings.\"dotted.key\"=x",
            "stacks.local.orchestrator.settings.empty=",
            "stack = 123",
        ]))
        .load()
        .unwrap();
    assert_eq!(
        settings(&config, "local", "orchestrator"),
        json!({
            "workers": 2,
            "ratio": 0.5,
            "debug": true,
            "name": "nightly run",
            "quoted": "42",
            "limits": {"cpu": 2, "memory": "4Gi"},
            "tags": ["a", "b"],
            "dotted.key": "x",
            "empty": "",
        })
    );
    // `stack` names a stack, so a number there is its text.
    assert_eq!(config.default_stack, "123");
}

#[test]
fn malformed_set_arguments_are_refused() {
    let dir = TempDir::new().unwrap();
    for (arg, needle) in [("=x", "not a dotted key"), ("a..b=1", "not a dotted key")] {
        let err = ConfigLoader::new(dir.path())
            .set(sets(&[arg]))
            .load()
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidOverride { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(needle) && msg.contains(&format!("--set {arg}")),
            "{msg}"
        );
    }
    let err = ConfigLoader::new(dir.path())
        .set(sets(&["stacks.local.store.pluginn=x"]))
        .load()
        .unwrap_err();
    assert!(err.to_string().contains("did you mean `plugin`"), "{err}");
}

#[test]
fn unknown_keys_are_refused_with_file_suggestion_and_valid_keys() {
    let cases = [
        (
            "stak = \"local\"\n",
            "stak",
            "stack",
            "stack, pipeline, plugin_dirs, stacks",
        ),
        (
            "[stacks.local]\norchestrator = { plugin = \"local\" }\nstor = { plugin = \"local\" }\n",
            "stacks.local.stor",
            "store",
            "orchestrator, store",
        ),
        (
            "[stacks.local]\norchestrator = { plugn = \"local\" }\n",
            "stacks.local.orchestrator.plugn",
            "plugin",
            "plugin, settings",
        ),
        (
            "[stacks.local.store]\nplugin = \"local\"\nsetings = { path = \"x\" }\n",
            "stacks.local.store.setings",
            "settings",
            "plugin, settings",
        ),
    ];
    for (text, key, suggestion, valid) in cases {
        let (dir, file) = project(text);
        let err = ConfigLoader::new(dir.path()).load().unwrap_err();
        match &err {
            ConfigError::UnknownKey {
                origin,
                key: k,
                suggestion: s,
                ..
            } => {
                assert_eq!(origin, &Origin::File(file.clone()));
                assert_eq!(k, key);
                assert_eq!(s.as_deref(), Some(suggestion));
            }
            other => panic!("expected UnknownKey, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("did you mean `{suggestion}`")),
            "{msg}"
        );
        assert!(msg.contains(valid), "{msg}");
    }
}

#[test]
fn wrong_value_kinds_are_refused_with_the_file() {
    let (dir, file) = project("[stacks]\nlocal = 3\n");
    let err = ConfigLoader::new(dir.path()).load().unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, ConfigError::InvalidType { key, .. } if key == "stacks.local"),
        "{err:?}"
    );
    assert!(
        msg.contains(&file.display().to_string()) && msg.contains("a table"),
        "{msg}"
    );

    let err = load_project("plugin_dirs = \"plugins\"\n").unwrap_err();
    assert!(err.to_string().contains("an array of strings"), "{err}");
}

#[test]
fn unknown_stack_suggests_and_lists_defined_stacks() {
    let config = load_project(
        r#"
[stacks.shared]
orchestrator = { plugin = "local" }
store = { plugin = "storage-s3", settings = { bucket = "ml", region = "us-east-1" } }
"#,
    )
    .unwrap();
    assert_eq!(config.stack(Some("shared")).unwrap().0, "shared");
    let err = config.stack(Some("shraed")).unwrap_err();
    match &err {
        ConfigError::UnknownStack {
            name,
            suggestion,
            defined,
        } => {
            assert_eq!(name, "shraed");
            assert_eq!(suggestion.as_deref(), Some("shared"));
            assert_eq!(defined, &["local", "shared"]);
        }
        other => panic!("expected UnknownStack, got {other:?}"),
    }
    assert!(
        err.to_string().contains("defined stacks: local, shared"),
        "{err}"
    );

    // A default stack that does not exist fails only when it is used.
    let config = load_project("stack = \"nope\"\n").unwrap();
    assert!(matches!(
        config.stack(None),
        Err(ConfigError::UnknownStack { .. })
    ));
    assert!(config.stack(Some("local")).is_ok());
}

#[test]
fn incomplete_stacks_are_errors_naming_the_stack() {
    let err = load_project("[stacks.gpu]\norchestrator = { plugin = \"k8s\" }\n").unwrap_err();
    assert!(
        matches!(&err, ConfigError::MissingComponent { stack, component: "store" } if stack == "gpu"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("stack `gpu` has no store"),
        "{err}"
    );

    let err = load_project(
        "[stacks.gpu]\norchestrator = { plugin = \" \" }\nstore = { plugin = \"local\" }\n",
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::MissingPlugin { stack, component: "orchestrator" } if stack == "gpu"),
        "{err:?}"
    );

    let err = load_project(
        "[stacks.gpu]\norchestrator = { settings = {} }\nstore = { plugin = \"local\" }\n",
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::MissingPlugin { .. }), "{err:?}");
}

#[test]
fn env_variables_map_to_nested_keys_and_non_config_ones_are_ignored() {
    let (dir, _) = project(
        r#"
[stacks.S3]
orchestrator = { plugin = "local" }
store = { plugin = "storage-s3", settings = { bucket = "ml", accessKeyId = "file" } }
"#,
    );
    let config = ConfigLoader::new(dir.path())
        .env(env(&[
            ("FERRY_PLUGIN_PATH", "/nowhere"),
            ("FERRY_CONFIG", "/nowhere.toml"),
            ("FERRY_LOG", "debug"),
            ("HOME", "/root"),
            ("FERRY_PIPELINE", "ci.yaml"),
            ("FERRY_STACK", "S3"),
            ("FERRY_STACKS__S3__STORE__SETTINGS__BUCKET", "b"),
            ("FERRY_STACKS__S3__STORE__SETTINGS__ACCESSKEYID", "env"),
            ("FERRY_STACKS__S3__STORE__SETTINGS__AWS_REGION", "eu-west-1"),
            ("FERRY_STACKS__S3__STORE__SETTINGS__retries", "3"),
            ("FERRY_STACKS__DEV__ORCHESTRATOR__PLUGIN", "local"),
            ("FERRY_STACKS__DEV__STORE__PLUGIN", "local"),
        ]))
        .load()
        .unwrap();
    assert_eq!(config.default_stack, "S3");
    assert_eq!(config.pipeline, dir.path().join("ci.yaml"));
    // Existing keys keep the file's spelling; new ones keep the variable's.
    assert_eq!(
        settings(&config, "S3", "store"),
        json!({"bucket": "b", "accessKeyId": "env", "AWS_REGION": "eu-west-1", "retries": 3})
    );
    // New stack names are lowercased, like the stack names typed on the command line.
    assert_eq!(config.stack(Some("dev")).unwrap().1.store.plugin, "local");

    // Empty FERRY_STACK counts as unset.
    let config = ConfigLoader::new(dir.path())
        .env(env(&[("FERRY_STACK", "")]))
        .load()
        .unwrap();
    assert_eq!(config.default_stack, "local");
}

#[test]
fn bad_env_keys_are_refused_naming_the_variable() {
    let dir = TempDir::new().unwrap();
    let err = ConfigLoader::new(dir.path())
        .env(env(&[("FERRY_STACKS__LOCAL__STORAGE__PLUGIN", "x")]))
        .load()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("environment variable FERRY_STACKS__LOCAL__STORAGE__PLUGIN"),
        "{msg}"
    );
    assert!(msg.contains("did you mean `store`"), "{msg}");

    let err = ConfigLoader::new(dir.path())
        .env(env(&[("FERRY_STACKS____STORE", "x")]))
        .load()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::InvalidOverride { .. }),
        "{err:?}"
    );
}

#[test]
fn settings_keys_keep_their_case() {
    let (dir, _) = project(
        r#"
[stacks.aws]
orchestrator = { plugin = "local", settings = { maxParallel = 2 } }
store = { plugin = "storage-s3", settings = { accessKeyId = "AKIA", AWS_REGION = "us-east-1", Nested = { innerKey = 1 } } }
"#,
    );
    let config = ConfigLoader::new(dir.path())
        .set(sets(&["stacks.aws.store.settings.SecretAccessKey=s"]))
        .load()
        .unwrap();
    assert_eq!(
        settings(&config, "aws", "store"),
        json!({
            "accessKeyId": "AKIA",
            "AWS_REGION": "us-east-1",
            "Nested": {"innerKey": 1},
            "SecretAccessKey": "s",
        })
    );
    assert_eq!(
        settings(&config, "aws", "orchestrator"),
        json!({"maxParallel": 2})
    );
}

#[test]
fn relative_paths_resolve_against_the_project_root() {
    let (dir, _) =
        project("pipeline = \"flows/p.yaml\"\nplugin_dirs = [\"plugins/bin\", \"/abs/plugins\"]\n");
    let nested = dir.path().join("src/deep");
    fs::create_dir_all(&nested).unwrap();
    let config = ConfigLoader::new(&nested).load().unwrap();
    assert_eq!(config.pipeline, dir.path().join("flows/p.yaml"));
    assert_eq!(
        config.plugin_dirs,
        [
            dir.path().join("plugins/bin"),
            PathBuf::from("/abs/plugins")
        ]
    );
}

#[test]
fn malformed_toml_names_the_file_and_line() {
    let (dir, file) = project("stack = \"local\"\n\n[stacks.local]\norchestrator = { plugin = \n");
    let err = ConfigLoader::new(dir.path()).load().unwrap_err();
    assert!(
        matches!(&err, ConfigError::Parse { path, .. } if *path == file),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains("line 4"), "{msg}");
}

#[test]
fn init_template_loads_and_its_example_stack_loads_when_uncommented() {
    let config = load_project(&init_template("demo\n[evil]")).unwrap();
    assert_eq!(config.default_stack, "local");
    assert_eq!(
        settings(&config, "local", "store"),
        json!({"path": ".ferry/artifacts"})
    );

    let uncommented: String = init_template("demo")
        .lines()
        .map(|line| {
            let example = ["# [stacks.shared]", "# orchestrator", "# store"]
                .iter()
                .any(|p| line.starts_with(p));
            let line = if example { &line[2..] } else { line };
            format!("{line}\n")
        })
        .collect();
    let config = load_project(&uncommented).unwrap();
    assert_eq!(
        config.stack(Some("shared")).unwrap().1.store.plugin,
        "storage-s3"
    );
}

#[test]
fn default_user_config_path_prefers_ferry_config() {
    assert_eq!(
        default_user_config_path(Some("/etc/ferry.toml".into())),
        Some(PathBuf::from("/etc/ferry.toml"))
    );
    if let Some(path) = default_user_config_path(Some("".into())) {
        assert!(path.ends_with("ferry/config.toml"), "{}", path.display());
    }
}
