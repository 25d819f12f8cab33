//! Embeds the git commit of the build as `TMD_BUILD_GIT_HASH` (`unknown` when not built from a
//! git checkout, e.g. from a source tarball). Not named `TELEMATICSD_*`: cargo also sets it in
//! the environment of test processes, and the daemon refuses unknown `TELEMATICSD_*` overrides.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let hash = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TMD_BUILD_GIT_HASH={hash}");
    // Rebuild when HEAD moves: the HEAD file (branch switch) and the branch's ref (commit),
    // loose or packed. Only files that exist: cargo reruns a build script on every build while
    // a `rerun-if-changed` path is missing (a fresh clone has no loose branch ref, a repository
    // that never packed has no packed-refs), which rebuilt the daemon on every cargo call.
    let watch = |path: Option<String>| {
        if let Some(p) = path.filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={p}");
        }
    };
    watch(git(&["rev-parse", "--git-path", "HEAD"]));
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(git(&["rev-parse", "--git-path", &branch]));
    }
    watch(git(&["rev-parse", "--git-path", "packed-refs"]));
    println!("cargo:rerun-if-changed=build.rs");
}
