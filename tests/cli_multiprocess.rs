//! The test network as separate processes started from the built binary, from the
//! configuration files `allium testnet --emit-configs` writes; fetched through with curl.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_allium")
}

fn start(args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_from_emitted_configs_carry_curl() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: curl is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("allium-mp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let status = std::process::Command::new(bin())
        .args(["testnet", "--emit-configs"])
        .arg(&dir)
        .args([
            "--authorities",
            "3",
            "--relays",
            "5",
            "--exits",
            "2",
            "--period",
            "6",
        ])
        .status()
        .unwrap();
    assert!(status.success());

    let mut children = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for f in &files {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let cmd = if name.starts_with("authority") {
            "authority"
        } else if name.starts_with("relay") {
            "relay"
        } else {
            "proxy"
        };
        let log = dir.join(format!("{name}.log"));
        children.push(start(&[cmd, "--config", f.to_str().unwrap()], &log));
    }
    let proxy_toml = std::fs::read_to_string(dir.join("proxy.toml")).unwrap();
    let socks = proxy_toml
        .lines()
        .find_map(|l| l.strip_prefix("socks_listen = "))
        .unwrap()
        .trim_matches('"')
        .to_string();

    let web = allium::cli::demo_server::start().await.unwrap();
    // Retry until the network has formed and the proxy bootstrapped (no timing assertion:
    // a generous bound only so a broken network fails instead of hanging).
    let mut body = String::new();
    for _ in 0..120 {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "20", "--socks5-hostname", &socks])
            .arg(format!("http://{web}/"))
            .output()
            .await
            .unwrap();
        if out.status.success() {
            body = String::from_utf8_lossy(&out.stdout).to_string();
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !body.contains("allium test network") {
        for f in &files {
            let log = f.with_extension("log");
            eprintln!(
                "--- {}:\n{}",
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("no page through the multi-process network");
    }
    for c in &mut children {
        let _ = c.start_kill();
    }
    for c in &mut children {
        let _ = c.wait().await;
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
