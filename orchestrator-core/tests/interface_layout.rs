//! The exported binary layout is pinned to the interface version: a change to any type that
//! crosses the plugin boundary without a version bump fails here, before a plugin built
//! against the old layout is refused at load time in a user's hands.
//!
//! `interface-layout.txt` holds the interface version and a digest of abi_stable's description
//! of the root module's layout (every type reachable from it). When this test fails:
//! - if the change is additive (a method appended after a `last_prefix_field`), bump the patch
//!   version of orchestrator-core; otherwise bump the minor (0.x) or major version;
//! - then record the new layout: `FERRY_UPDATE_INTERFACE_LAYOUT=1 cargo test -p
//!   orchestrator-core --test interface_layout`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use abi_stable::StableAbi;
use abi_stable::type_layout::TypeLayout;
use orchestrator_core::INTERFACE_VERSION;
use orchestrator_core::abi::PluginModuleRef;

/// Every type reachable from the root module, depth first: its name, size, alignment, kind,
/// and the names abi_stable records for it (fields, methods, variants). Addresses and the
/// crate's own version are left out: the digest is about the layout alone.
fn describe(layout: &'static TypeLayout, seen: &mut HashSet<String>, out: &mut String) {
    let name = format!("{} {}", layout.package(), layout.full_type());
    if !seen.insert(name.clone()) {
        return;
    }
    writeln!(
        out,
        "{name} size={} align={} {:?} {:?}",
        layout.size(),
        layout.alignment(),
        layout.data_discriminant(),
        layout.shared_vars().strings()
    )
    .unwrap();
    for child in layout.shared_vars().type_layouts() {
        describe(child(), seen, out);
    }
}

fn layout_digest() -> String {
    let mut layout = String::new();
    describe(
        <PluginModuleRef as StableAbi>::LAYOUT,
        &mut HashSet::new(),
        &mut layout,
    );
    // FNV-1a: stable across Rust releases, unlike `DefaultHasher`.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in layout.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[test]
fn the_exported_layout_changes_only_with_the_interface_version() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("interface-layout.txt");
    let current = format!("{INTERFACE_VERSION} {}\n", layout_digest());
    if std::env::var_os("FERRY_UPDATE_INTERFACE_LAYOUT").is_some() {
        std::fs::write(&file, &current).unwrap();
        return;
    }
    let recorded = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; record it with FERRY_UPDATE_INTERFACE_LAYOUT=1",
            file.display()
        )
    });
    let (version, digest) = recorded.trim().split_once(' ').expect("`VERSION DIGEST`");
    if version == INTERFACE_VERSION {
        assert_eq!(
            digest,
            layout_digest(),
            "the plugin interface's binary layout changed but orchestrator-core is still {version}: \
             bump its version (see this file's header), then record the layout with \
             FERRY_UPDATE_INTERFACE_LAYOUT=1"
        );
    } else {
        panic!(
            "orchestrator-core is {INTERFACE_VERSION} but {} records {version}: record the layout of \
             the new version with FERRY_UPDATE_INTERFACE_LAYOUT=1",
            file.display()
        );
    }
}
