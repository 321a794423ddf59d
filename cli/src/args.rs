//! Command-line arguments, as clap parses them. Turned into actions in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Run pipelines on your laptop today and on Kubernetes tomorrow",
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Run as if ferry was started in DIR
    #[arg(short = 'C', long = "directory", value_name = "DIR", global = true)]
    pub directory: Option<PathBuf>,

    /// Override a configuration value, e.g. `--set stacks.local.orchestrator.settings.parallelism=2`
    #[arg(long = "set", value_name = "KEY=VALUE", global = true, value_parser = crate::resolve::config_override)]
    pub set: Vec<(String, String)>,

    /// Also look for plugins in DIR (searched first; repeatable)
    #[arg(long = "plugin-dir", value_name = "DIR", global = true)]
    pub plugin_dirs: Vec<PathBuf>,

    /// More output: -v for info, -vv for debug (RUST_LOG or FERRY_LOG for fine control)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create ferry.toml and an example pipeline in a directory
    Init(InitArgs),
    /// Run a pipeline
    Run(RunArgs),
    /// Show what `ferry run` would do or create, without running anything
    Render(RenderArgs),
    /// Check a pipeline file and report every problem in it
    Validate(ValidateArgs),
    /// Build the code package remote stacks ship: list its files, write it, or upload it
    Package(PackageArgs),
    /// List, inspect and cancel runs
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Remove old finished runs, the cache entries only they back and the packages nothing
    /// uses any more
    Gc(GcArgs),
    /// Serve a web dashboard of the stack's runs: their DAG, live logs, artifacts
    Ui(UiArgs),
    /// Run a pipeline on a cron schedule, in the cluster (Kubernetes stacks)
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Show the logs of a run or of one of its steps
    Logs(LogsArgs),
    /// List and download step outputs
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// Show the configured stacks
    #[command(subcommand)]
    Stack(StackCommand),
    /// List and inspect plugins
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Print shell completions
    Completions(CompletionsArgs),
    /// Run inside a remote orchestrator's pod (started by ferry, not by people)
    #[command(subcommand, hide = true)]
    Agent(AgentCommand),
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Fetch the run's code package and run the plan in FERRY_AGENT_PLAN against the store in
    /// FERRY_AGENT_STORE, reporting events as JSON lines on stdout
    Run {
        /// Run only this step; its inputs come from the run's upstream results in the store
        #[arg(long)]
        step: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to initialise (created if missing)
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Project name (default: the directory's name)
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Pipeline file, or a directory holding pipeline.yaml (default: from ferry.toml, else
    /// pipeline.yaml in the project root)
    pub pipeline: Option<PathBuf>,
    /// Stack to use (default: `stack` from ferry.toml, else `local`)
    #[arg(long, env = "FERRY_STACK")]
    pub stack: Option<String>,
    /// Set a pipeline parameter (repeatable)
    #[arg(short, long = "param", value_name = "NAME=VALUE", value_parser = crate::resolve::key_value)]
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Run every step, even those with a cached result
    #[arg(long)]
    pub no_cache: bool,
    /// After the run, say for each step why it was a cache hit or a miss (which parameter,
    /// file or input changed)
    #[arg(long)]
    pub explain_cache: bool,
    /// Start the run and print its id without following it (on the local stack it goes on in
    /// a background ferry); reattach with `ferry logs -f RUN` or `ferry runs show RUN`
    #[arg(long)]
    pub detach: bool,
    /// What Ctrl-C does to a run on a remote stack: ask (on a terminal; detach otherwise),
    /// cancel it, or detach and leave it running
    #[arg(long, value_enum, default_value_t = OnInterrupt::Ask)]
    pub on_interrupt: OnInterrupt,
    /// `json`: the run's events as JSON lines on stdout, then its record (`"event": "result"`)
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnInterrupt {
    Ask,
    Cancel,
    Detach,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Show the schedule `ferry schedule create NAME --cron EXPR` would create instead of a run
    #[arg(long, value_name = "NAME", requires = "cron")]
    pub schedule: Option<String>,
    /// With --schedule: when it fires
    #[arg(long, value_name = "EXPR", requires = "schedule")]
    pub cron: Option<String>,
    #[command(flatten)]
    pub when: ScheduleOptions,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule: the pipeline, its parameters and the code as they are now, run at
    /// every firing with a fresh run id
    Create(ScheduleCreateArgs),
    /// List the stack's schedules
    List(ScheduleListArgs),
    /// Show a schedule: when it fires, what it runs, its recent runs
    Show(ScheduleShowArgs),
    /// Stop a schedule from firing until it is resumed
    Suspend(ScheduleRefArgs),
    /// Let a suspended schedule fire again
    Resume(ScheduleRefArgs),
    /// Delete a schedule; runs it started that are still going are cancelled
    Delete(ScheduleRefArgs),
    /// Start a run of a schedule now
    Trigger(ScheduleRefArgs),
}

#[derive(Debug, Args)]
pub struct ScheduleCreateArgs {
    /// The schedule's name: lower case letters, digits and '-'
    pub name: String,
    /// When it fires: five cron fields (minute hour day-of-month month day-of-week, e.g.
    /// `30 2 * * *`) or @hourly, @daily, @weekly, @monthly, @yearly
    #[arg(long, value_name = "EXPR")]
    pub cron: String,
    #[command(flatten)]
    pub when: ScheduleOptions,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// How a schedule fires, beyond its cron expression.
#[derive(Debug, Args)]
pub struct ScheduleOptions {
    /// IANA time zone the expression is read in (default UTC), e.g. Europe/Paris
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// When it fires while its previous run is still going: start beside it, skip this
    /// firing, or cancel the old run and start anew
    #[arg(long, value_enum, default_value_t = ConcurrencyArg::Forbid)]
    pub concurrency: ConcurrencyArg,
    /// Skip a firing missed by more than this many seconds (the cluster was down) rather
    /// than start it late
    #[arg(long, value_name = "SECONDS")]
    pub starting_deadline: Option<u64>,
    /// Finished launches of succeeded runs the cluster keeps (run records stay regardless)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub keep_succeeded: u32,
    /// Finished launches of failed runs the cluster keeps
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub keep_failed: u32,
    /// Create it suspended: nothing fires until `ferry schedule resume`
    #[arg(long)]
    pub suspended: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConcurrencyArg {
    Allow,
    Forbid,
    Replace,
}

#[derive(Debug, Args)]
pub struct ScheduleRefArgs {
    /// The schedule's name
    pub name: String,
    #[command(flatten)]
    pub stack: StackArg,
}

#[derive(Debug, Args)]
pub struct ScheduleListArgs {
    #[command(flatten)]
    pub stack: StackArg,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ScheduleShowArgs {
    #[command(flatten)]
    pub schedule: ScheduleRefArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Pipeline file or directory (default as for `ferry run`)
    pub pipeline: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct PackageArgs {
    /// List the files that would be shipped (with sizes), like `cargo package --list`
    #[arg(long)]
    pub list: bool,
    /// Write the package to FILE
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Upload the package to the stack's artifact store (skipped when it is already there)
    #[arg(long)]
    pub upload: bool,
    /// Stack whose store receives the package (with --upload)
    #[arg(long, env = "FERRY_STACK")]
    pub stack: Option<String>,
    /// Pipeline whose commands are checked for files the package leaves out
    #[arg(long, value_name = "PIPELINE")]
    pub pipeline: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List recent runs, newest first
    List(RunsListArgs),
    /// Show a run: status, parameters, steps
    Show(RunShowArgs),
    /// Cancel a running run
    Cancel(RunRefArgs),
    /// Start a finished run again under a new id: the same plan and code, the outputs of the
    /// steps that succeeded reused, the failed, skipped and cancelled ones run
    Retry(RunRetryArgs),
    /// Remove finished runs with their logs and outputs, the cache entries only they back and
    /// the packages no other run uses
    Delete(RunsDeleteArgs),
}

#[derive(Debug, Args)]
pub struct RunsDeleteArgs {
    /// Run ids
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<String>,
    /// Print what would be removed, and remove nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub stack: StackArg,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep the newest N runs, whatever their age
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Remove only runs created longer ago than this, e.g. 30d or 12h
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Print what would be removed, and remove nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub stack: StackArg,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RunRetryArgs {
    #[command(flatten)]
    pub run: RunRefArgs,
    /// Run this step and every step after it again, even if they succeeded
    #[arg(long, value_name = "STEP")]
    pub from: Option<String>,
    /// Print the new run's id without following it
    #[arg(long)]
    pub detach: bool,
    /// What Ctrl-C does to a run on a remote stack (as for `ferry run`)
    #[arg(long, value_enum, default_value_t = OnInterrupt::Ask)]
    pub on_interrupt: OnInterrupt,
}

#[derive(Debug, Args)]
pub struct StackArg {
    /// Stack whose store holds the runs (default: the current stack)
    #[arg(long, env = "FERRY_STACK")]
    pub stack: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunsListArgs {
    /// How many runs to show
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    /// Only runs of this pipeline
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// Only runs in this state
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Only runs started by this schedule
    #[arg(long, value_name = "NAME")]
    pub schedule: Option<String>,
    /// Only runs created within this long, e.g. 2h or 7d
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    #[command(flatten)]
    pub stack: StackArg,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RunRefArgs {
    /// Run id, or `latest`
    pub run: String,
    #[command(flatten)]
    pub stack: StackArg,
}

#[derive(Debug, Args)]
pub struct RunShowArgs {
    #[command(flatten)]
    pub run: RunRefArgs,
    /// Say for each step why it was a cache hit or a miss
    #[arg(long)]
    pub cache: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub run: RunRefArgs,
    /// Only this step
    pub step: Option<String>,
    /// Keep following until the run (or step) ends
    #[arg(short, long)]
    pub follow: bool,
    /// `json`: every event (log lines with their step, stream and time; status changes;
    /// notices) as JSON lines
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// List the outputs of a run or of one step
    List(ArtifactsListArgs),
    /// Download outputs of a step (all, or one path) to a local directory
    Get(ArtifactsGetArgs),
}

#[derive(Debug, Args)]
pub struct ArtifactsListArgs {
    #[command(flatten)]
    pub run: RunRefArgs,
    /// Only this step
    pub step: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ArtifactsGetArgs {
    #[command(flatten)]
    pub run: RunRefArgs,
    /// Step whose outputs to download
    pub step: String,
    /// One output path (default: all of the step's outputs)
    pub path: Option<String>,
    /// Destination directory
    #[arg(short = 'o', long = "out", default_value = ".")]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// List the configured stacks
    List(OutputArgs),
    /// Show a stack: its plugins, where they come from, their settings
    Show(StackShowArgs),
    /// Test a stack's store: write, read back, list and delete a probe object, with latencies
    Check(StackCheckArgs),
}

#[derive(Debug, Args)]
pub struct StackCheckArgs {
    /// Stack name (default: the current stack)
    pub name: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct StackShowArgs {
    /// Stack name (default: the current stack)
    pub name: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List built-in plugins and plugin files on the search path
    List(OutputArgs),
    /// Show a plugin's metadata and the settings it accepts
    Inspect(PluginInspectArgs),
    /// Copy a plugin file into the user plugin directory, after checking that it loads
    Install(PluginInstallArgs),
}

#[derive(Debug, Args)]
pub struct PluginInstallArgs {
    /// The plugin file (a `.so` built from a plugin crate)
    pub path: PathBuf,
    /// Replace an installed file that claims the same plugin name
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PluginInspectArgs {
    /// Plugin name or path to a plugin file
    pub plugin: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct UiArgs {
    /// Port to listen on (0: any free port)
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Address to listen on; anything but 127.0.0.1 requires a token
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// The token a non-loopback dashboard requires (default: one is generated and printed)
    #[arg(long, env = "FERRY_UI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Open the dashboard in the default browser
    #[arg(long)]
    pub open: bool,
    #[command(flatten)]
    pub stack: StackArg,
}
