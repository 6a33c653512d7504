//! The test network as separate processes started from the built binary, from the
//! configuration files `allium testnet --emit-configs` writes; fetched through with curl.
//! The proxy also publishes an onion service from a `[[service]]` entry of its
//! proxy.toml, and curl fetches the page through it by its `.allium` address.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use common::prereq;
use common::procnet::{self, curl, ProcNet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_from_emitted_configs_carry_curl() {
    if !prereq::require(&[prereq::curl()]) {
        return;
    }
    let dir = procnet::emit("mp", 3, 5, 2, 6);
    let web = allium::cli::demo_server::start().await.unwrap();
    // A [[service]] entry (top-level array of tables: appended at the end of the file).
    let key_file = dir.join("service.key");
    let proxy_toml = dir.join("proxy.toml");
    let mut text = std::fs::read_to_string(&proxy_toml).unwrap();
    text.push_str(&format!(
        "\n[[service]]\nkey_file = {:?}\nport = 80\ntarget = \"{web}\"\n",
        key_file.to_string_lossy()
    ));
    std::fs::write(&proxy_toml, text).unwrap();
    let mut net = ProcNet::open(&dir);
    net.start_ready(Duration::from_secs(60)).await;
    let socks = net.socks();

    // The network has formed and the proxy bootstrapped; retry while a first circuit fails
    // (no timing assertion: a generous bound only so a broken network fails instead of
    // hanging).
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

    // The proxy printed its service's address; the page comes through it too.
    let log = std::fs::read_to_string(&net.node("proxy").log).unwrap();
    let address = log
        .lines()
        .find_map(|l| l.strip_prefix("onion service: "))
        .expect("the proxy prints its onion service's address")
        .trim()
        .to_string();
    assert!(address.ends_with(".allium"), "{address}");
    let mut onion_body = String::new();
    for _ in 0..60 {
        let (code, out, _) =
            curl(socks, &format!("http://{address}/"), &["--max-time", "30"]).await;
        if code == 0 {
            onion_body = String::from_utf8_lossy(&out).to_string();
            break;
        }
        // Until the descriptor is published.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !onion_body.contains("allium test network") {
        net.dump_logs();
        panic!("no page through the proxy's onion service");
    }
    eprintln!("page fetched through the proxy's onion service");
    net.finish().await;
}
