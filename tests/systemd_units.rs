//! The systemd units shipped in contrib/systemd/ are the ones operators install: each is
//! checked by `systemd-analyze verify` (with only the binary's path substituted, since the
//! unit names the installed /usr/local/bin/allium), and must keep the sandboxing and restart
//! policy docs/operating.md promises.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::prereq;

const ROLES: [&str; 3] = ["relay", "authority", "proxy"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unit_text(role: &str) -> String {
    let path = repo().join(format!("contrib/systemd/allium-{role}.service"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The values of `key=` lines in the unit, in order.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// A fresh directory for this test's unit files (removed when dropped).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("allium-units-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn systemd_analyze() -> Result<(), String> {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("systemd-analyze (Debian package systemd)".into()),
    }
}

/// Runs `systemd-analyze verify` on `unit` written to `dir`; returns its complaints.
fn verify(dir: &Path, name: &str, unit: &str) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown or misspelt keys are only warnings (exit 0): any line naming the unit fails.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(name) || l.contains(&*path.to_string_lossy()))
        .collect();
    if out.status.success() && complaints.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{stderr}", out.status))
    }
}

#[test]
fn shipped_units_pass_systemd_analyze_verify() {
    if !prereq::require(&[systemd_analyze()]) {
        return;
    }
    let dir = Scratch::new("verify");
    let binary = env!("CARGO_BIN_EXE_allium");
    for role in ROLES {
        let unit = unit_text(role).replace("/usr/local/bin/allium", binary);
        let name = format!("allium-{role}.service");
        if let Err(e) = verify(dir.path(), &name, &unit) {
            panic!("contrib/systemd/{name} does not verify: {e}");
        }
    }
}

#[test]
fn the_verifier_sees_a_misspelt_key_and_a_missing_binary() {
    if !prereq::require(&[systemd_analyze()]) {
        return;
    }
    let dir = Scratch::new("negative");
    let good = unit_text("relay").replace("/usr/local/bin/allium", env!("CARGO_BIN_EXE_allium"));
    let misspelt = good.replace("ProtectSystem=strict", "ProtectSystm=strict");
    assert!(verify(dir.path(), "allium-misspelt.service", &misspelt).is_err());
    let missing = unit_text("relay").replace("/usr/local/bin/allium", "/nonexistent/allium");
    assert!(verify(dir.path(), "allium-missing.service", &missing).is_err());
}

#[test]
fn units_sandbox_the_node_and_always_restart_it() {
    for role in ROLES {
        let unit = unit_text(role);
        for (key, want) in [
            ("Restart", "always"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("User", "allium"),
            ("ReadWritePaths", "/var/lib/allium"),
        ] {
            assert_eq!(values(&unit, key), [want], "allium-{role}.service {key}");
        }
        assert_eq!(
            values(&unit, "ExecStart"),
            [format!("/usr/local/bin/allium {role} --config /etc/allium/{role}.toml").as_str()],
            "allium-{role}.service runs the documented command"
        );
    }
}

#[test]
fn example_data_dirs_are_writable_under_the_units() {
    for role in ROLES {
        let example = repo().join(format!("docs/examples/{role}.toml"));
        let text = std::fs::read_to_string(&example).unwrap();
        let table: toml::Table = text.parse().unwrap();
        let data_dir = table[role]["data_dir"].as_str().unwrap();
        let unit = unit_text(role);
        let writable = values(&unit, "ReadWritePaths");
        assert!(
            writable.iter().any(|w| Path::new(data_dir).starts_with(w)),
            "docs/examples/{role}.toml data_dir {data_dir} is not under ReadWritePaths {writable:?}"
        );
    }
}

#[test]
fn the_unit_command_line_is_one_the_binary_accepts() {
    for role in ROLES {
        let out = Command::new(env!("CARGO_BIN_EXE_allium"))
            .args([role, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "allium {role} --help failed");
        assert!(help.contains("--config"), "allium {role} takes no --config");
    }
}
