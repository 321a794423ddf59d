//! Every environment variable ferry reads or sets, declared once.

/// Extra plugin directories, `:`-separated, searched after `--plugin-dir`.
pub const FERRY_PLUGIN_PATH: &str = "FERRY_PLUGIN_PATH";
/// The user configuration file (default: `<config dir>/ferry/config.toml`).
pub const FERRY_CONFIG: &str = "FERRY_CONFIG";
/// The stack to use when `--stack` is not given.
pub const FERRY_STACK: &str = "FERRY_STACK";
/// Log filter in `RUST_LOG` syntax, for ferry only (`RUST_LOG` works too).
pub const FERRY_LOG: &str = "FERRY_LOG";

// The step environment: what a step's command sees. Documented in the README; stable.

/// The run's id.
pub const FERRY_RUN_ID: &str = "FERRY_RUN_ID";
/// The pipeline's name.
pub const FERRY_PIPELINE: &str = "FERRY_PIPELINE";
/// The step's name.
pub const FERRY_STEP: &str = "FERRY_STEP";
/// 1 for the first attempt, 2 for the first retry, ...
pub const FERRY_ATTEMPT: &str = "FERRY_ATTEMPT";
/// Where the step writes its outputs; everything in it is saved to the store.
pub const FERRY_OUTPUT_DIR: &str = "FERRY_OUTPUT_DIR";
/// The step's private scratch directory (also `TMPDIR`), removed after the run.
pub const FERRY_WORK_DIR: &str = "FERRY_WORK_DIR";
/// Directory holding one sub-directory per input step with that step's outputs.
pub const FERRY_INPUTS_DIR: &str = "FERRY_INPUTS_DIR";
/// Prefix of per-input variables: `FERRY_INPUT_<STEP>` is the outputs of input step `<step>`
/// (upper-cased, `-` as `_`).
pub const FERRY_INPUT_PREFIX: &str = "FERRY_INPUT_";
/// Prefix of parameter variables: `FERRY_PARAM_<NAME>` (upper-cased).
pub const FERRY_PARAM_PREFIX: &str = "FERRY_PARAM_";
/// The project root: where ferry.toml is, or where the code package was unpacked.
pub const FERRY_PROJECT_DIR: &str = "FERRY_PROJECT_DIR";

/// `ferry agent run`: the run plan (JSON), set by the remote orchestrator that started the
/// agent, from a ConfigMap.
pub const FERRY_AGENT_PLAN: &str = "FERRY_AGENT_PLAN";
/// `ferry agent run`: how to open the artifact store (JSON `{plugin, settings}`), from a
/// Secret (or a ConfigMap when the store is reached by workload identity).
pub const FERRY_AGENT_STORE: &str = "FERRY_AGENT_STORE";
/// JSON list of a step's earlier attempts that ended with their pod: set on the pod a
/// coordinator starts to retry the step (becomes `RunPlan::prior_attempts`).
pub const FERRY_AGENT_PRIOR_ATTEMPTS: &str = "FERRY_AGENT_PRIOR_ATTEMPTS";
/// `ferry agent run`: when set, the orchestrator (JSON `{plugin, settings}`) that runs the plan
/// from inside the cluster, for example the Kubernetes backend's coordinator in `steps` mode.
/// Unset, the agent runs the plan itself with the local orchestrator.
pub const FERRY_AGENT_ORCHESTRATOR: &str = "FERRY_AGENT_ORCHESTRATOR";

/// The name a per-step variable gets for a step or parameter name.
pub fn env_suffix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `ferry agent run` of a schedule's launch (its plan is a template): the id its run gets,
/// chosen by whoever started the launch by hand (`ferry schedule trigger`); a launch the
/// schedule fired mints one.
pub const FERRY_AGENT_RUN_ID: &str = "FERRY_AGENT_RUN_ID";

/// `ferry agent run` without `FERRY_AGENT_ORCHESTRATOR`: the settings (a JSON object) of the
/// local orchestrator that runs the steps in the pod, e.g. the parallelism and the
/// `cpu_budget`/`memory_budget` the pod was sized for.
pub const FERRY_AGENT_LOCAL_SETTINGS: &str = "FERRY_AGENT_LOCAL_SETTINGS";
