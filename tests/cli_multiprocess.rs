//! The test network as separate processes started from the built binary, from the
//! configuration files `allium testnet --emit-configs` writes; fetched through with curl.

mod common;

use std::time::Duration;

use common::procnet::{self, curl, ProcNet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_from_emitted_configs_carry_curl() {
    if !procnet::have_curl() {
        println!("skipped: curl is not installed");
        return;
    }
    let dir = procnet::emit("mp", 3, 5, 2, 6);
    let mut net = ProcNet::open(&dir);
    net.start_all();
    let socks = net.socks();

    let web = allium::cli::demo_server::start().await.unwrap();
    // Retry until the network has formed and the proxy bootstrapped (no timing assertion:
    // a generous bound only so a broken network fails instead of hanging).
    let mut body = String::new();
    for _ in 0..120 {
        let (code, out, _) = curl(socks, &format!("http://{web}/"), &["--max-time", "20"]).await;
        if code == 0 {
            body = String::from_utf8_lossy(&out).to_string();
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !body.contains("allium test network") {
        net.dump_logs();
        panic!("no page through the multi-process network");
    }
    net.finish().await;
}
