//! Configuration files made from the documented examples (docs/examples/*.toml), changing
//! only what an operator following docs/operating.md changes: identities, addresses and
//! paths. Every substitution must find its line, so an edit of an example that these
//! tests no longer follow fails loudly instead of testing something else.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use allium::crypto::IdentityPublic;

/// The text of `docs/examples/{name}.toml`.
pub fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/examples")
        .join(format!("{name}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replaces the first line that is exactly `old` (ignoring a trailing comment) with `new`.
pub fn replace_line(text: &str, old: &str, new: &str) -> String {
    let mut done = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            let bare = l.split(" #").next().unwrap_or(l).trim_end();
            if !done && bare == old {
                done = true;
                new.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(done, "the example has no line {old:?}");
    out.join("\n") + "\n"
}

/// Sets `key = value` on the first line that sets `key` (`value` in TOML syntax).
pub fn set(text: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key} = ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("the example sets no {key}"));
    let bare = line
        .split(" #")
        .next()
        .unwrap_or(line)
        .trim_end()
        .to_string();
    replace_line(text, &bare, &format!("{key} = {value}"))
}

/// Replaces the example's `[[{table}.authorities]]` entry with `authorities`.
pub fn with_authorities(
    text: &str,
    table: &str,
    authorities: &[(IdentityPublic, SocketAddr)],
) -> String {
    let header = format!("[[{table}.authorities]]");
    let mut entries = String::new();
    for (i, (id, addr)) in authorities.iter().enumerate() {
        if i > 0 {
            entries.push('\n');
        }
        entries.push_str(&format!("{header}\nidentity = \"{id}\"\naddr = \"{addr}\""));
    }
    let start = text
        .find(&header)
        .unwrap_or_else(|| panic!("the example has no {header}"));
    // The example's entry is the header and two lines (identity, addr).
    let rest = &text[start..];
    let end = rest
        .match_indices('\n')
        .nth(2)
        .map_or(text.len(), |(i, _)| start + i);
    assert!(text[start..end].contains("identity = ") && text[start..end].contains("addr = "));
    format!("{}{entries}{}", &text[..start], &text[end..])
}

/// Uncomments the example's `[metrics]` table with `listen`.
pub fn with_metrics(text: &str, listen: &str) -> String {
    let text = replace_line(text, "# [metrics]", "[metrics]");
    let line = text
        .lines()
        .find(|l| l.starts_with("# listen = "))
        .expect("the example has a commented metrics listen line")
        .to_string();
    replace_line(&text, &line, &format!("listen = \"{listen}\""))
}

/// docs/examples/NAME.toml with `listen` on 0.0.0.0 (as documented) at `port` and keys in
/// `data_dir`.
fn node_example(name: &str, port: u16, data_dir: &Path) -> String {
    let text = example(name);
    let text = replace_line(
        &text,
        "listen = \"0.0.0.0:9001\"",
        &format!("listen = \"0.0.0.0:{port}\""),
    );
    set(
        &text,
        "data_dir",
        &format!("{:?}", data_dir.display().to_string()),
    )
}

/// docs/examples/relay.toml with `listen` on 0.0.0.0 (as documented) at `port`, keys in
/// `data_dir`, publishing to `authorities`.
pub fn relay(port: u16, data_dir: &Path, authorities: &[(IdentityPublic, SocketAddr)]) -> String {
    let text = node_example("relay", port, data_dir);
    with_authorities(&text, "relay", authorities)
}

/// docs/examples/authority.toml with `listen` on 0.0.0.0 at `port`, keys in `data_dir`,
/// the authority list `authorities`; plus what only a test network changes: a short
/// period and the flag thresholds of a network that is minutes old.
pub fn authority(
    port: u16,
    data_dir: &Path,
    authorities: &[(IdentityPublic, SocketAddr)],
    period_secs: u64,
) -> String {
    let text = node_example("authority", port, data_dir);
    let text = set(&text, "period_secs", &period_secs.to_string());
    let text = set(&text, "test_network", "true");
    with_authorities(&text, "authority", authorities)
}

/// docs/examples/proxy.toml with its state in `data_dir`, bootstrapping from
/// `authorities` (SOCKS on the documented 127.0.0.1:9050).
pub fn proxy(data_dir: &Path, authorities: &[(IdentityPublic, SocketAddr)]) -> String {
    let text = example("proxy");
    let text = set(
        &text,
        "data_dir",
        &format!("{:?}", data_dir.display().to_string()),
    );
    with_authorities(&text, "proxy", authorities)
}
