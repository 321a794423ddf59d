//! Fuzz the package unpacker: any bytes, as a `.tar.zst`, must give `Ok` or `Err`, never a
//! panic, and (checked by the unpacker's own refusals) never a write outside the target.
//!
//! Run with `scripts/fuzz.sh 60 unpack` (or `cargo +nightly fuzz run unpack fuzz/corpus/unpack`
//! from `orchestrator-core/`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // One scratch directory per fuzzing process; the unpacker makes and removes a fresh
    // target under it for every input.
    let scratch = std::env::temp_dir().join(format!("ferry-fuzz-unpack-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&scratch);
    orchestrator_host::fuzz::unpack(data, &scratch);
});
