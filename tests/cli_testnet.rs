//! `allium testnet` as a real process: it comes up, prints a curl command that works
//! through the overlay (run with the real curl), the same for its demo onion service
//! (`<address>.allium`), prints a control port that accepts its cookie, and shuts down
//! cleanly on SIGINT.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::prereq;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testnet_command_serves_curl_and_stops_on_ctrl_c() {
    if !prereq::require(&[prereq::curl()]) {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_allium"))
        .args(["testnet", "--socks-port", "0", "--period", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The log (default level), kept to check what it says about onion addresses.
    let stderr = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            all.push(l);
        }
        all
    });
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut control = None;
    let mut cookie = None;
    let (curl_line, onion_line) = tokio::time::timeout(Duration::from_secs(150), async {
        let mut direct = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(a) = line.trim().strip_prefix("control port:") {
                control = Some(a.trim().to_string());
            }
            if let Some(p) = line.trim().strip_prefix("cookie file:") {
                cookie = Some(p.trim().to_string());
            }
            if let Some(cmd) = line.trim().strip_prefix("try it:") {
                direct = Some(cmd.trim().to_string());
            }
            if let Some(cmd) = line.trim().strip_prefix("via onion:") {
                return (
                    direct.expect("the direct curl line comes first"),
                    cmd.trim().to_string(),
                );
            }
        }
        panic!("testnet exited before printing the curl commands");
    })
    .await
    .expect("the test network must come up");
    for (what, line) in [("direct", &curl_line), ("onion", &onion_line)] {
        let args: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(args[0], "curl");
        assert_eq!(args[1], "--socks5-hostname");
        if what == "onion" {
            assert!(args[3].ends_with(".allium/"), "{line}");
        }
        let started = std::time::Instant::now();
        let out = Command::new("curl")
            .args(&args[1..])
            .args(["-s", "--max-time", "90"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{what} curl failed: {:?}", out);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.contains("allium test network"), "{body}");
        eprintln!("{what}: page fetched in {:?}", started.elapsed());
    }

    // A mistyped onion address: curl is told "host unreachable" (SOCKS5 reply 4, curl's
    // exit code 97), and the log says why without naming the address.
    let args: Vec<&str> = onion_line.split_whitespace().collect();
    let url = args[3];
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut chars: Vec<char> = address.chars().collect();
    chars[5] = if chars[5] == 'a' { 'b' } else { 'a' };
    let typo: String = chars.into_iter().collect();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--socks5-hostname", args[2]])
        .arg(format!("http://{typo}/"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(97), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("(4)"),
        "SOCKS reply must be 4, host unreachable: {said}"
    );

    // The printed control port and cookie file work (docs/control.md).
    let control = control.expect("no control port line");
    let cookie = std::fs::read(cookie.expect("no cookie file line")).unwrap();
    let hex: String = cookie.iter().map(|b| format!("{b:02x}")).collect();
    let mut ctl = tokio::net::TcpStream::connect(&control).await.unwrap();
    use tokio::io::AsyncWriteExt;
    ctl.write_all(format!("AUTHENTICATE {hex}\r\nGETINFO status/bootstrap-phase\r\n").as_bytes())
        .await
        .unwrap();
    let mut replies = BufReader::new(ctl).lines();
    assert_eq!(replies.next_line().await.unwrap().unwrap(), "250 OK");
    let phase = replies.next_line().await.unwrap().unwrap();
    assert!(phase.contains("PROGRESS=100"), "{phase}");

    // Ctrl-C: a clean exit.
    let pid = child.id().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("testnet must exit after SIGINT")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let log = log.await.unwrap();
    assert!(
        log.iter().any(|l| l.contains("checksum mismatch")),
        "no log line explains the failed onion connection"
    );
    let typo_key = typo.trim_end_matches(".allium");
    assert!(
        !log.iter().any(|l| l.contains(typo_key)),
        "the log names the requested onion address"
    );
    // The service's own address appears only where the service announces itself.
    let own_key = address.trim_end_matches(".allium");
    for l in log.iter().filter(|l| l.contains(own_key)) {
        assert!(l.contains("onion service") && l.contains("starting"), "{l}");
    }
    eprintln!("mistyped address: curl exit 97 (SOCKS host unreachable); the log explains without naming it");
}
