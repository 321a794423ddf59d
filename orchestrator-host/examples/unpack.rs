//! Verify and unpack a code package, as the in-cluster agent does; used by
//! `bench/package-bench.sh` to time unpacking.
//!
//! ```sh
//! cargo run --release -p orchestrator-host --example unpack -- ARCHIVE DIGEST TARGET_DIR
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [archive, digest, target] = args.as_slice() else {
        eprintln!("usage: unpack ARCHIVE DIGEST TARGET_DIR");
        return ExitCode::from(2);
    };
    match orchestrator_host::package::unpack::unpack_file(
        &PathBuf::from(archive),
        digest,
        &PathBuf::from(target),
    ) {
        Ok(stats) => {
            println!(
                "unpacked {} files, {} links, {} bytes into {target}",
                stats.files, stats.symlinks, stats.bytes
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
