//! Records the commit the binary was built from, for `ghmesh --version`: the release
//! workflow passes `GHMESH_BUILD_COMMIT`; a build from a git checkout asks git; any
//! other build says "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GHMESH_BUILD_COMMIT");
    let commit = std::env::var("GHMESH_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".into());
    let short: String = commit.trim().chars().take(12).collect();
    println!("cargo:rustc-env=GHMESH_COMMIT={short}");
}

fn git_head() -> Option<String> {
    let dir = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let dir = String::from_utf8(dir.stdout).ok()?;
    // A new commit moves HEAD or the branch it points at; both files live here.
    println!("cargo:rerun-if-changed={}/HEAD", dir.trim());
    println!("cargo:rerun-if-changed={}/refs/heads", dir.trim());
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    String::from_utf8(out.stdout).ok()
}
