use super::*;

#[test]
fn calls_are_read_from_requests_notifications_and_batches() {
    let call = inspect(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#)
        .expect("valid");
    assert_eq!(
        call,
        McpCall {
            method: "tools/call".into(),
            name: Some("echo".into()),
            id: Some(json!(7)),
            arguments: Some("{}".into()),
            batch: Vec::new(),
        }
    );
    let read = inspect(
        br#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"demo://x"}}"#,
    )
    .expect("valid");
    assert_eq!(read.name.as_deref(), Some("demo://x"));
    let note =
        inspect(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).expect("valid");
    assert_eq!(note.id, None);
    let batch = inspect(
        br#"[{"jsonrpc":"2.0","method":"x"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}]"#,
    )
    .expect("valid");
    assert_eq!(batch.method, "batch");
    let calls: Vec<(&str, Option<&str>)> = batch
        .batch
        .iter()
        .map(|c| (c.method.as_str(), c.name.as_deref()))
        .collect();
    assert_eq!(calls, [("x", None), ("tools/call", Some("echo"))]);
    for (bad, code) in [
        (&b"{not json"[..], PARSE_ERROR),
        (br#"{"id":1,"method":"x"}"#, INVALID_REQUEST),
        (br#"{"jsonrpc":"2.0","id":1,"method":5}"#, INVALID_REQUEST),
        (br#"{"jsonrpc":"2.0","id":1}"#, INVALID_REQUEST),
        (br#"[]"#, INVALID_REQUEST),
        (br#"[{"jsonrpc":"2.0","method":"x"},5]"#, INVALID_REQUEST),
        (br#"[{"id":1,"method":"x"}]"#, INVALID_REQUEST),
        (br#""text""#, INVALID_REQUEST),
    ] {
        assert_eq!(
            inspect(bad).map_err(|e| e.1).err(),
            Some(code),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn the_reader_keeps_raw_arguments_and_refuses_repeated_members() {
    let call = inspect(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"arguments":{"a":[1,{"b":null}]},"meta":[{"x":1}],"name":"e\u0063ho"}}"#,
    )
    .expect("valid");
    assert_eq!(call.method, "tools/call");
    assert_eq!(call.name.as_deref(), Some("echo"));
    assert_eq!(call.arguments.as_deref(), Some(r#"{"a":[1,{"b":null}]}"#));
    // A name that is not a string names nothing; params that are not an object are ignored.
    for odd in [
        &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":{"x":"y"}}}"#[..],
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":[1,2]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"echo"}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[{"name":"echo"}]}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}"#,
    ] {
        let call = inspect(odd).expect("valid");
        assert_eq!((call.method.as_str(), call.name), ("tools/call", None));
    }
    // The upstream must not see another method or tool than the policy chain did.
    for repeated in [
        &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"wipe"}}"#[..],
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"arguments":{},"arguments":{}}}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"uri":"a","uri":"b"}}"#,
    ] {
        assert_eq!(
            inspect(repeated).map_err(|e| e.1).err(),
            Some(INVALID_REQUEST),
            "{}",
            String::from_utf8_lossy(repeated)
        );
    }
}

#[test]
fn headers_that_contradict_the_body_are_refused() {
    let call = McpCall {
        method: "tools/call".into(),
        name: Some("echo".into()),
        ..McpCall::default()
    };
    let mut headers = HeaderMap::new();
    headers.insert("mcp-method", HeaderValue::from_static("tools/call"));
    headers.insert("mcp-name", HeaderValue::from_static("echo"));
    assert!(check_headers(&headers, &call).is_ok());
    headers.insert("mcp-name", HeaderValue::from_static("delete_everything"));
    assert_eq!(
        check_headers(&headers, &call).map_err(|e| e.1),
        Err(HEADER_MISMATCH)
    );
    // Base64-encoded names are decoded and compared too: "echo", then "delete".
    headers.insert("mcp-name", HeaderValue::from_static("=?base64?ZWNobw==?="));
    assert!(check_headers(&headers, &call).is_ok());
    for wrong in [
        "=?base64?ZGVsZXRl?=",
        "=?base64?not base64?=",
        "=?base64?ZWNobw==",
    ] {
        headers.insert("mcp-name", HeaderValue::from_static(wrong));
        assert_eq!(
            check_headers(&headers, &call).map_err(|e| e.1),
            Err(HEADER_MISMATCH),
            "{wrong}"
        );
    }
    headers.remove("mcp-name");
    headers.insert("mcp-method", HeaderValue::from_static("tools/list"));
    assert_eq!(
        check_headers(&headers, &call).map_err(|e| e.1),
        Err(HEADER_MISMATCH)
    );
}

#[test]
fn a_batch_is_bounded() {
    let batch = |n: usize| {
        let one = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#;
        format!("[{}]", vec![one; n].join(","))
    };
    assert_eq!(
        inspect(batch(super::MAX_BATCH).as_bytes())
            .expect("at the bound")
            .batch
            .len(),
        super::MAX_BATCH
    );
    let (status, code, message) = inspect(batch(20_000).as_bytes()).expect_err("over it");
    assert_eq!(
        (status, code),
        (StatusCode::BAD_REQUEST, super::INVALID_REQUEST)
    );
    assert!(
        message.contains("at most 100 messages; this one holds 20000"),
        "{message}"
    );
}

#[test]
fn nesting_is_measured_outside_strings() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(!super::nests_deeper_than(deep(128).as_bytes(), 128));
    assert!(super::nests_deeper_than(deep(129).as_bytes(), 128));
    let quoted = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
    assert!(
        !super::nests_deeper_than(quoted.as_bytes(), 128),
        "brackets in a string"
    );
    assert!(!super::nests_deeper_than(
        br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        2
    ));
}
