//! The commented `ferry.toml` written by `ferry init`.

/// A starter `ferry.toml` that loads as-is and documents the common knobs in place.
pub fn init_template(project_name: &str) -> String {
    // The name only appears in a comment; a newline in it would end the comment and leak TOML.
    let name: String = project_name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        r#"# ferry project configuration for {name}.
#
# Precedence, lowest first: built-in defaults, your user config
# (~/.config/ferry/config.toml or $FERRY_CONFIG), this file, FERRY_* environment
# variables (e.g. FERRY_STACK=shared), then `--set key=value` on the command line.

# The stack used when `--stack` is not given.
stack = "local"

# The pipeline run by default, relative to this file's directory.
pipeline = "pipeline.yaml"

# Extra directories searched for plugins, relative to this file's directory.
# plugin_dirs = ["plugins/bin"]

# A stack pairs an orchestrator (runs the steps) with an artifact store (keeps
# their outputs). Each names a plugin; `settings` are passed to that plugin.
[stacks.local]
orchestrator = {{ plugin = "local" }}
store = {{ plugin = "local", settings = {{ path = ".ferry/artifacts" }} }}

# A second stack, used with `--stack shared` or `stack = "shared"`:
# [stacks.shared]
# orchestrator = {{ plugin = "local" }}
# store = {{ plugin = "storage-s3", settings = {{ bucket = "my-bucket", region = "us-east-1" }} }}
"#
    )
}
