//! Properties of the parsers at the edge, over generated and mutated input: nothing panics,
//! and what the policy chain reads is what the upstream will read.

use super::*;
use proptest::prelude::*;

/// Valid messages that mutations start from.
const SEEDS: [&str; 5] = [
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
    r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    r#"{"jsonrpc":"2.0","id":"a","result":{}}"#,
    r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"x"}]"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"demo://x"}}"#,
];

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(SEEDS.as_slice()),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(seed, flips, cut)| {
            let mut bytes = seed.as_bytes().to_vec();
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn inspect_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = inspect(&bytes);
    }

    #[test]
    fn a_message_read_is_the_message_the_upstream_reads(bytes in mutated()) {
        // The peek does not decode the parts it skips (an argument's text may hold a lone
        // surrogate escape that a full parse refuses); where a full parse succeeds, it must
        // see the same method and name as the policy chain did.
        if let (Ok(call), Ok(value)) = (inspect(&bytes), serde_json::from_slice::<serde_json::Value>(&bytes)) {
            if call.batch.is_empty() && call.method != "response" {
                prop_assert_eq!(value["method"].as_str(), Some(call.method.as_str()));
                let named = value["params"]["name"].as_str().or(value["params"]["uri"].as_str());
                prop_assert_eq!(named, call.name.as_deref());
            }
            for (one, value) in call.batch.iter().zip(value.as_array().into_iter().flatten()) {
                if one.method != "response" {
                    prop_assert_eq!(value["method"].as_str(), Some(one.method.as_str()));
                }
            }
        }
    }

    #[test]
    fn headers_never_panic_and_a_contradiction_is_refused(
        method in any::<String>(),
        name in any::<String>(),
        bytes in mutated(),
    ) {
        if let Ok(call) = inspect(&bytes) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&method) {
                headers.insert("mcp-method", value);
            }
            if let Ok(value) = HeaderValue::from_str(&name) {
                headers.insert("mcp-name", value);
            }
            let sent = headers.get("mcp-method").and_then(|v| v.to_str().ok());
            if check_headers(&headers, &call).is_ok() {
                prop_assert!(sent.is_none_or(|m| m == call.method));
            }
        }
    }
}
