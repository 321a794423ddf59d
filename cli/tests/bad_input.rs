//! Bad input, one table: pipeline files, configuration, command-line arguments, plugin files and
//! code packages that ferry must refuse. Each case gives the exact first error line (`{dir}` is
//! the project directory), the exit code, and is checked to leave no file behind: no run
//! record, no artifact, no package.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::Project;

struct Case {
    what: &'static str,
    /// Files written before the command (relative path, content).
    files: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
    code: i32,
    /// The first line of stderr that starts with `error:`, exactly, and the `hint:` line after
    /// it when the case gives one (`"error: ...\nhint: ..."`).
    error: &'static str,
}

const PIPELINE: &str = "p/pipeline.yaml";
const OK_PIPELINE: (&str, &str) = (PIPELINE, "name: x\nsteps:\n  a:\n    run: echo\n");

const CASES: &[Case] = &[
    // ---- pipeline files
    Case {
        what: "unknown key in a step",
        files: &[(
            PIPELINE,
            "name: x\nsteps:\n  a:\n    run: echo\n    needz: [b]\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:5:5: unknown key `needz` in step `a` (did you mean `needs`?)",
    },
    Case {
        what: "a step that needs itself",
        files: &[(
            PIPELINE,
            "name: x\nsteps:\n  a:\n    run: echo\n    needs: [a]\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:5:13: step `a` depends on itself in `needs`",
    },
    Case {
        what: "a dependency cycle",
        files: &[(
            PIPELINE,
            "name: x\nsteps:\n  a:\n    run: echo\n    needs: [b]\n  b:\n    run: echo\n    needs: [a]\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:8:13: dependency cycle: a -> b -> a (remove one of these dependencies)",
    },
    Case {
        what: "an unknown dependency",
        files: &[(
            PIPELINE,
            "name: x\nsteps:\n  a:\n    run: echo\n    needs: [zzz]\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:5:13: step `a` needs unknown step `zzz` (steps are: `a`)",
    },
    Case {
        what: "a step name that is a path",
        files: &[(PIPELINE, "name: x\nsteps:\n  \"../evil\":\n    run: echo\n")],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:3:3: invalid step name `../evil`: it must start with a lowercase letter or digit, not `.` (step names look like `train-model` or `step_2`)",
    },
    Case {
        what: "a step name with a space (shell quoting)",
        files: &[(PIPELINE, "name: x\nsteps:\n  \"a b\":\n    run: echo\n")],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:3:3: invalid step name `a b`: ` ` is not allowed; use lowercase letters, digits, `_` and `-` (step names look like `train-model` or `step_2`)",
    },
    Case {
        what: "a step name with unicode",
        files: &[(PIPELINE, "name: x\nsteps:\n  träin:\n    run: echo\n")],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:3:3: invalid step name `träin`: `ä` is not allowed; use lowercase letters, digits, `_` and `-` (step names look like `train-model` or `step_2`)",
    },
    Case {
        what: "a step name too long for Kubernetes names",
        files: &[(
            PIPELINE,
            "name: x\nsteps:\n  a234567890123456789012345678901234567890123456789012345678901234567890:\n    run: echo\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:3:3: invalid step name `a234567890123456789012345678901234567890123456789012345678901234567890`: it is 70 characters long, the maximum is 63 (step names look like `train-model` or `step_2`)",
    },
    Case {
        what: "a pipeline name with a slash",
        files: &[(PIPELINE, "name: \"x/y\"\nsteps:\n  a:\n    run: echo\n")],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:1:7: invalid pipeline name `x/y`: `/` is not allowed; use lowercase letters, digits, `_` and `-` (pipeline names look like `train-model` or `step_2`)",
    },
    Case {
        what: "an output outside the output directory",
        files: &[(
            PIPELINE,
            "name: x\nsteps:\n  a:\n    run: echo\n    outputs: [../x]\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:5:15: output `../x` of step `a` contains `..`; outputs must stay inside the step's output directory",
    },
    Case {
        what: "both run and command",
        files: &[(
            PIPELINE,
            "name: x\nsteps:\n  a:\n    run: echo\n    command: [echo]\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:5:5: step `a` has both `run` and `command` (keep one: `run` for a shell script, `command` for an argument list)",
    },
    Case {
        what: "no steps",
        files: &[(PIPELINE, "name: x\nsteps: {}\n")],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:2:8: pipeline has no steps (add at least one step under `steps:`)",
    },
    Case {
        what: "broken YAML",
        files: &[(PIPELINE, "name: x\nsteps:\n  a:\n    run: [echo\n")],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:4:10: invalid yaml: unclosed bracket '['",
    },
    Case {
        what: "a duration that is not one",
        files: &[(
            PIPELINE,
            "name: x\nsteps:\n  a:\n    run: echo\n    timeout: soon\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:5:14: invalid `timeout` `soon` in step `a`: expected number at 0 (use a duration like `30s`, `10m` or `1h 30m`)",
    },
    Case {
        what: "too many retries",
        files: &[(
            PIPELINE,
            "name: x\nsteps:\n  a:\n    run: echo\n    retries: 99\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:5:14: step `a` has `retries: 99`, the maximum is 10",
    },
    Case {
        what: "a malformed cpu quantity",
        files: &[(
            PIPELINE,
            "name: x\nsteps:\n  a:\n    run: echo\n    resources: {cpu: lots}\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:5:22: invalid cpu `lots` in step `a` (use cores like `2` or `0.5`, or millicores like `500m`)",
    },
    Case {
        what: "an image reference with a space",
        files: &[(
            PIPELINE,
            "name: x\nsteps:\n  a:\n    run: echo\n    image: \"a b\"\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:5:12: invalid `image` in step `a`: an image reference has no spaces and is not empty",
    },
    Case {
        what: "an env var name a shell cannot hold",
        files: &[(
            PIPELINE,
            "name: x\nsteps:\n  a:\n    run: echo\n    env: {\"BAD NAME\": x}\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:5:11: invalid env var name `BAD NAME` in step `a`: it must match [A-Za-z_][A-Za-z0-9_]* (try `BAD_NAME`)",
    },
    // ---- parameters and arguments
    Case {
        what: "a required parameter not given",
        files: &[(
            PIPELINE,
            "name: x\nparams:\n  n: {description: d}\nsteps:\n  a:\n    run: echo\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: missing value for required param `n` (pass --param n=<value>)",
    },
    Case {
        what: "an unknown parameter",
        files: &[OK_PIPELINE],
        args: &["run", "p", "--param", "zz=1"],
        code: 1,
        error: "error: unknown param `zz` (this pipeline declares no params)",
    },
    Case {
        what: "a parameter without a value",
        files: &[OK_PIPELINE],
        args: &["run", "p", "--param", "zz"],
        code: 2,
        error: "error: invalid value 'zz' for '--param <NAME=VALUE>': write parameters as NAME=VALUE, e.g. --param epochs=10",
    },
    Case {
        what: "an unknown flag",
        files: &[OK_PIPELINE],
        args: &["run", "p", "--bogus"],
        code: 2,
        error: "error: unexpected argument '--bogus' found",
    },
    Case {
        what: "an invalid --on-interrupt",
        files: &[OK_PIPELINE],
        args: &["run", "p", "--on-interrupt", "maybe"],
        code: 2,
        error: "error: invalid value 'maybe' for '--on-interrupt <ON_INTERRUPT>'",
    },
    Case {
        what: "no pipeline file",
        files: &[],
        args: &["run", "nothere"],
        code: 1,
        error: "error: no pipeline file at {dir}/nothere",
    },
    Case {
        what: "a run id that is a path",
        files: &[],
        args: &["runs", "show", "../../etc"],
        code: 1,
        error: "error: cannot read run `../../etc`: `../../etc` is not a run id (see `ferry runs list`)",
    },
    Case {
        what: "an unknown run",
        files: &[],
        args: &["runs", "show", "20261127-000000-000-abcdef"],
        code: 1,
        error: "error: cannot read run `20261127-000000-000-abcdef`: no run `20261127-000000-000-abcdef` in file://{dir}/.ferry/artifacts (see `ferry runs list`)",
    },
    Case {
        what: "a --set without a value",
        files: &[OK_PIPELINE],
        args: &["--set", "foo", "run", "p"],
        code: 2,
        error: "error: invalid value 'foo' for '--set <KEY=VALUE>': write it as `--set key=value`, e.g. `--set stack=local`",
    },
    Case {
        what: "a --set of an unknown key",
        files: &[OK_PIPELINE],
        args: &["--set", "foo.bar=1", "run", "p"],
        code: 1,
        error: "error: unknown key `foo` in --set foo.bar=1; valid keys here: stack, pipeline, plugin_dirs, stacks, package",
    },
    // ---- configuration
    Case {
        what: "an unknown stack",
        files: &[OK_PIPELINE, ("ferry.toml", "stack = \"nope\"\n")],
        args: &["run", "p"],
        code: 1,
        error: "error: unknown stack `nope`; defined stacks: local\nhint: pick one of those or define [stacks.nope] in ferry.toml",
    },
    Case {
        what: "a misspelt top-level key",
        files: &[OK_PIPELINE, ("ferry.toml", "stakc = \"x\"\n")],
        args: &["run", "p"],
        code: 1,
        error: "error: unknown key `stakc` in {dir}/ferry.toml (did you mean `stack`?); valid keys here: stack, pipeline, plugin_dirs, stacks, package",
    },
    Case {
        what: "TOML that does not parse",
        files: &[OK_PIPELINE, ("ferry.toml", "stack = \n")],
        args: &["run", "p"],
        code: 1,
        error: "error: cannot parse config file {dir}/ferry.toml: TOML parse error at line 1, column 9",
    },
    Case {
        what: "a misspelt orchestrator setting",
        files: &[
            OK_PIPELINE,
            (
                "ferry.toml",
                "[stacks.a]\norchestrator = { plugin = \"local\", settings = { paralelism = 2 } }\nstore = { plugin = \"local\" }\n",
            ),
        ],
        args: &["run", "p", "--stack", "a"],
        code: 1,
        error: "error: cannot open stack `a`: orchestrator `local` could not be created: unknown setting `paralelism` for plugin `local`; did you mean `parallelism`?",
    },
    Case {
        what: "an orchestrator setting of the wrong type",
        files: &[
            OK_PIPELINE,
            (
                "ferry.toml",
                "[stacks.a]\norchestrator = { plugin = \"local\", settings = { parallelism = \"many\" } }\nstore = { plugin = \"local\" }\n",
            ),
        ],
        args: &["run", "p", "--stack", "a"],
        code: 1,
        error: "error: cannot open stack `a`: orchestrator `local` could not be created: `parallelism` must be a whole number from 1 to 1024, found \"many\"",
    },
    Case {
        what: "a stack without a store",
        files: &[
            OK_PIPELINE,
            (
                "ferry.toml",
                "[stacks.a]\norchestrator = { plugin = \"local\" }\n",
            ),
        ],
        args: &["run", "p", "--stack", "a"],
        code: 1,
        error: "error: stack `a` has no store\nhint: add `store = { plugin = \"...\" }` under [stacks.a]",
    },
    Case {
        what: "an S3 store without a bucket",
        files: &[
            OK_PIPELINE,
            (
                "ferry.toml",
                "[stacks.a]\norchestrator = { plugin = \"local\" }\nstore = { plugin = \"storage-s3\", settings = { region = \"x\" } }\n",
            ),
        ],
        args: &["run", "p", "--stack", "a"],
        code: 1,
        error: "error: cannot open stack `a`: artifact store `storage-s3` could not be created: storage-s3 needs a bucket: set `url = \"s3://bucket/prefix\"` or `bucket` in the stack's store settings",
    },
    Case {
        what: "an invalid Kubernetes pull policy",
        files: &[
            OK_PIPELINE,
            (
                "ferry.toml",
                "[stacks.a]\norchestrator = { plugin = \"kubernetes\", settings = { image_pull_policy = \"Sometimes\" } }\nstore = { plugin = \"local\" }\n",
            ),
        ],
        args: &["run", "p", "--stack", "a"],
        code: 1,
        error: "error: cannot open stack `a`: orchestrator `kubernetes` could not be created: kubernetes: setting `image_pull_policy`: `Sometimes` is not a pull policy; use Always, Never or IfNotPresent",
    },
    Case {
        what: "a step that uses an undeclared parameter",
        files: &[(
            PIPELINE,
            "name: x\nparams:\n  epochs: { default: \"1\" }\nsteps:\n  a:\n    run: echo\n    uses_params: [epoch]\n",
        )],
        args: &["run", "p"],
        code: 1,
        error: "error: {dir}/p/pipeline.yaml:7:19: step `a` uses parameter `epoch`, which the pipeline does not declare (did you mean `epochs`?)\nhint: fix the 1 problem above in {dir}/p/pipeline.yaml",
    },
    Case {
        what: "a schedule on the local stack",
        files: &[OK_PIPELINE],
        args: &["schedule", "create", "nightly", "--cron", "0 2 * * *", "p"],
        code: 1,
        error: "error: stack `local` (orchestrator `local`): this orchestrator cannot keep schedules: a schedule fires with nobody's ferry running, so it needs a cluster (an orchestrator such as `kubernetes`)",
    },
    Case {
        what: "a schedule with a six-field cron expression",
        files: &[
            OK_PIPELINE,
            (
                "ferry.toml",
                "[stacks.a]\norchestrator = { plugin = \"kubernetes\", settings = { kubeconfig = \"/nonexistent/kubeconfig\" } }\nstore = { plugin = \"local\" }\n",
            ),
        ],
        args: &[
            "schedule",
            "create",
            "nightly",
            "--cron",
            "0 0 2 * * *",
            "p",
            "--stack",
            "a",
        ],
        code: 1,
        error: "error: stack `a` (orchestrator `kubernetes`): `0 0 2 * * *` is not a cron expression a CronJob accepts: it has 6 fields, not 5; write five fields, minute hour day-of-month month day-of-week (`30 2 * * *` is 02:30 every day), or @hourly, @daily, @weekly, @monthly, @yearly",
    },
    Case {
        what: "a schedule name a CronJob cannot carry",
        files: &[
            OK_PIPELINE,
            (
                "ferry.toml",
                "[stacks.a]\norchestrator = { plugin = \"kubernetes\", settings = { kubeconfig = \"/nonexistent/kubeconfig\" } }\nstore = { plugin = \"local\" }\n",
            ),
        ],
        args: &[
            "schedule", "create", "Nightly", "--cron", "@daily", "p", "--stack", "a",
        ],
        code: 1,
        error: "error: stack `a` (orchestrator `kubernetes`): schedule name `Nightly` must consist of lower case letters, digits and '-', start with a letter and not end with '-'",
    },
    Case {
        what: "a store path that is not a string",
        files: &[
            OK_PIPELINE,
            (
                "ferry.toml",
                "[stacks.a]\norchestrator = { plugin = \"local\" }\nstore = { plugin = \"local\", settings = { path = 3 } }\n",
            ),
        ],
        args: &["run", "p", "--stack", "a"],
        code: 1,
        error: "error: cannot open stack `a`: artifact store `local` could not be created: setting `path` must be a string, found 3",
    },
    // ---- plugin files
    Case {
        what: "a file that is not a plugin",
        files: &[("libfake.so", "not a library\n")],
        args: &["plugins", "inspect", "libfake.so"],
        code: 1,
        error: "error: {dir}/libfake.so: not a ferry plugin (the file is not a loadable shared library); remove it from the plugin directory or rebuild it with orchestrator-core's export macro",
    },
    Case {
        what: "installing a file that is not a plugin",
        files: &[("libfake.so", "not a library\n")],
        args: &["plugins", "install", "libfake.so"],
        code: 1,
        error: "error: {dir}/libfake.so: not a ferry plugin (the file is not a loadable shared library); remove it from the plugin directory or rebuild it with orchestrator-core's export macro",
    },
    Case {
        what: "installing a file that does not exist",
        files: &[],
        args: &["plugins", "install", "nothere.so"],
        code: 1,
        error: "error: {dir}/nothere.so: cannot read the plugin file (No such file or directory (os error 2))",
    },
    Case {
        what: "an unknown plugin name",
        files: &[],
        args: &["plugins", "inspect", "nosuch"],
        code: 1,
        error: "error: no plugin named `nosuch`",
    },
    // ---- code packages
    Case {
        what: "a package over the size limit",
        files: &[
            ("ferry.toml", "[package]\nmax_size_mib = 1\n"),
            ("data/big.bin", BIG),
        ],
        args: &["package", "--out", "code.tar.zst"],
        code: 1,
        error: "error: cannot package the project at {dir}: the code package is 1.1 MiB, over the limit of 1.0 MiB (package.max_size_mib in ferry.toml); largest files: data/big.bin (1.1 MiB), ferry.toml (27 B)\nhint: exclude what steps do not need in .ferryignore (same syntax as .gitignore) and check with `ferry package --list`",
    },
    Case {
        what: "a package include that leaves the project",
        files: &[("ferry.toml", "[package]\ninclude = [\"../outside\"]\n")],
        args: &["package", "--out", "code.tar.zst"],
        code: 1,
        error: "error: cannot package the project at {dir}: include pattern `../outside` in ferry.toml leaves the project\nhint: use paths relative to the project root, without `..`",
    },
    Case {
        what: "an out-of-range compression level",
        files: &[("ferry.toml", "[package]\ncompression_level = 99\n")],
        args: &["package", "--out", "code.tar.zst"],
        code: 1,
        error: "error: invalid configuration: package.compression_level must be from 1 to 19, found 99",
    },
];

/// Stands for 1.2 MB of incompressible bytes in a case's files (the size limit is on the
/// compressed package).
const BIG: &str = "<1.2 MB of noise>";

fn noise(len: usize) -> Vec<u8> {
    // xorshift: the same bytes every time, and nothing zstd can shrink.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn files_under(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                found.insert(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found
}

#[test]
fn bad_input_is_refused_with_its_exact_message_and_nothing_is_written() {
    assert!(CASES.len() >= 30, "the table holds {} cases", CASES.len());
    let mut failures = Vec::new();
    for case in CASES {
        let project = Project::new();
        for (path, content) in case.files {
            if *content == BIG {
                std::fs::create_dir_all(project.path().join(path).parent().unwrap()).unwrap();
                std::fs::write(project.path().join(path), noise(1_200_000)).unwrap();
            } else {
                project.write(path, content);
            }
        }
        let before = files_under(project.path());
        let run = project.ferry(case.args);
        let stderr = run.stderr();
        let dir = project.path().display().to_string();
        let expected = case.error.replace("{dir}", &dir);
        let lines: Vec<&str> = stderr.lines().collect();
        let error = lines
            .iter()
            .position(|l| l.starts_with("error:"))
            .map(|at| lines[at..lines.len().min(at + expected.lines().count())].join("\n"));
        if run.code() != case.code {
            failures.push(format!(
                "{}: exit code {} instead of {}\n{stderr}",
                case.what,
                run.code(),
                case.code
            ));
        }
        if error.as_deref() != Some(expected.as_str()) {
            failures.push(format!(
                "{}:\n  expected {expected}\n  got      {}",
                case.what,
                error.as_deref().unwrap_or("(no error line)")
            ));
        }
        let after = files_under(project.path());
        let written: Vec<&String> = after.difference(&before).collect();
        if !written.is_empty() {
            failures.push(format!("{}: files were written: {written:?}", case.what));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
