// Stamps the binary with the git commit and build date printed by `ha --version`.
use std::process::Command;

fn main() {
    let commit = std::env::var("HA_BUILD_COMMIT").ok().or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    });
    let date = std::env::var("HA_BUILD_DATE").ok().or_else(|| {
        Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    });
    println!(
        "cargo:rustc-env=HA_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!(
        "cargo:rustc-env=HA_BUILD_DATE={}",
        date.unwrap_or_else(|| "unknown".into())
    );
    println!("cargo:rerun-if-env-changed=HA_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=HA_BUILD_DATE");
    println!("cargo:rerun-if-changed=../.git/HEAD");
}
