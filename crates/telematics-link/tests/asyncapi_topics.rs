//! The AsyncAPI document (docs/asyncapi.yaml) describes exactly the topics the code uses.
//!
//! The channel addresses are read from the YAML with a minimal line scan: every line whose
//! first non-blank text is `address:` (the only key of that name in the document; servers use
//! `host:`). That relies on the document's format (one `address: vehicles/{vin}/...` per
//! channel, plain or quoted scalar), and the CI check (scripts/asyncapi-check.sh) makes sure
//! the scan is faithful: it parses the document with @asyncapi/parser and fails unless the
//! parsed channel addresses equal the addresses found by the same line scan. So no Node.js is
//! needed here, and the chain code == scan == parser holds whenever both checks pass.

use std::collections::BTreeSet;
use std::path::PathBuf;

use telematics_link::topics;

/// Every function of `telematics_link::topics`, by name, called with the literal `{vin}`.
fn code_topics() -> Vec<(&'static str, String)> {
    const VIN: &str = "{vin}";
    vec![
        ("telemetry", topics::telemetry(VIN)),
        ("alerts", topics::alerts(VIN)),
        ("results", topics::results(VIN)),
        ("status", topics::status(VIN)),
        ("commands", topics::commands(VIN)),
        ("session", topics::session(VIN)),
        ("session_request", topics::session_request(VIN)),
        ("devices", topics::devices(VIN)),
        ("devices_request", topics::devices_request(VIN)),
        ("devices_revoke", topics::devices_revoke(VIN)),
        ("devices_revocations", topics::devices_revocations(VIN)),
        ("identity_csr", topics::identity_csr(VIN)),
        ("identity_certificate", topics::identity_certificate(VIN)),
        ("identity_outcome", topics::identity_outcome(VIN)),
    ]
}

fn repo_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The `address:` values of the document (see the module doc for the format it relies on).
fn asyncapi_addresses(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|line| line.trim_start().strip_prefix("address:"))
        .map(|value| {
            let value = value.split(" #").next().unwrap_or("").trim();
            value.trim_matches(|c| c == '\'' || c == '"').to_string()
        })
        .collect()
}

/// Names of the `pub fn NAME(vin: &str)` items of `pub mod topics` in the link's source, so
/// that a topic function added to the code without updating `code_topics` fails this test.
fn topic_fn_names(src: &str) -> BTreeSet<String> {
    let start = src
        .find("pub mod topics {")
        .expect("`pub mod topics` in lib.rs");
    let body = &src[start..];
    let end = body.find("\n}").expect("end of `pub mod topics`");
    body[..end]
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("pub fn "))
        .filter_map(|l| l.split('(').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn asyncapi_channels_are_exactly_the_code_topics() {
    let yaml = repo_file("docs/asyncapi.yaml");
    let in_doc = asyncapi_addresses(&yaml);
    let doc: BTreeSet<String> = in_doc.iter().cloned().collect();
    assert_eq!(
        doc.len(),
        in_doc.len(),
        "duplicate channel address in docs/asyncapi.yaml"
    );

    let code: BTreeSet<String> = code_topics().into_iter().map(|(_, t)| t).collect();
    let missing: Vec<_> = code.difference(&doc).collect();
    let extra: Vec<_> = doc.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/asyncapi.yaml and telematics_link::topics differ: used by the code but absent \
         from the document: {missing:?}; channels no topics function produces: {extra:?}"
    );
}

#[test]
fn code_topics_lists_every_topics_function() {
    let names = topic_fn_names(&repo_file("crates/telematics-link/src/lib.rs"));
    let listed: BTreeSet<String> = code_topics()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(
        names, listed,
        "telematics_link::topics changed: update code_topics() here and docs/asyncapi.yaml"
    );
}

#[test]
fn address_scan_reads_plain_and_quoted_scalars() {
    let yaml = "channels:\n  a:\n    address: vehicles/{vin}/a\n  b:\n    address: 'vehicles/{vin}/b' # c\n  c:\n    address: \"vehicles/{vin}/c\"\n";
    assert_eq!(
        asyncapi_addresses(yaml),
        ["vehicles/{vin}/a", "vehicles/{vin}/b", "vehicles/{vin}/c"]
    );
}

#[test]
fn topic_fn_scan_reads_only_the_topics_module() {
    let src = "pub fn outside(vin: &str) {}\npub mod topics {\n    /// doc\n    pub fn a(vin: &str) -> String {\n        x\n    }\n    pub fn b_c(vin: &str) -> String {\n        x\n    }\n}\npub fn after() {}\n";
    let names: Vec<String> = topic_fn_names(src).into_iter().collect();
    assert_eq!(names, ["a", "b_c"]);
}
