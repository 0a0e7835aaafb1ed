use super::*;

#[test]
fn secrets_are_masked_at_any_depth_and_other_keys_kept() {
    let r = Redaction::new(&["ssn".to_owned()]);
    let masked: Value = serde_json::from_str(&r.apply(serde_json::json!({
        "city": "Oslo",
        "Password": "p",
        "api-key": "k",
        "nested": [{ "client_secret": "s", "AccessToken": "t", "n": 1 }],
        "headers": { "Authorization": "Bearer x" },
        "user_SSN": "123",
    })))
    .expect("json");
    assert_eq!(
        masked,
        serde_json::json!({
            "city": "Oslo",
            "Password": "[redacted]",
            "api-key": "[redacted]",
            "nested": [{ "client_secret": "[redacted]", "AccessToken": "[redacted]", "n": 1 }],
            "headers": { "Authorization": "[redacted]" },
            "user_SSN": "[redacted]",
        })
    );
    let big = serde_json::json!({ "blob": "x".repeat(MAX_ARGUMENTS_BYTES) });
    assert!(r.apply(big).contains("truncated_bytes"));
}

fn event(n: u8) -> AuditEvent {
    AuditEvent {
        id: format!("id-{n}"),
        at_us: 1,
        request_id: "r".to_owned(),
        actor_subject: "s".to_owned(),
        actor_email: None,
        actor_tenant: None,
        actor_client_id: None,
        operation: "op".to_owned(),
        tool: None,
        server: None,
        arguments: Some(format!("{{\"n\":{n}}}")),
        decision: decision::ALLOW.to_owned(),
        outcome: outcome::OK.to_owned(),
        error: None,
        duration_us: 5,
        server_tenant: None,
    }
}

#[test]
fn nuls_become_the_replacement_character_in_every_text_and_json_string() {
    let nul = |s: &str| format!("{s}\0{s}");
    let mut e = AuditEvent {
        id: nul("i"),
        at_us: 1,
        request_id: nul("r"),
        actor_subject: nul("s"),
        actor_email: Some(nul("e")),
        actor_tenant: Some(nul("t")),
        actor_client_id: Some(nul("c")),
        operation: nul("POST /servers/a"),
        tool: Some(nul("tool")),
        server: Some(nul("a")),
        // As serde_json writes it: the NULs are escapes in the text.
        arguments: Some(serde_json::json!({ "k\0": ["x\0y", { "n": 1, "d": "\0" }] }).to_string()),
        decision: nul("allow"),
        outcome: nul("ok"),
        error: Some(nul("why")),
        duration_us: 5,
        server_tenant: None,
    };
    assert!(
        e.arguments
            .as_deref()
            .is_some_and(|a| a.contains("\\u0000"))
    );
    e.sanitise();
    let json = serde_json::to_string(&e).expect("json");
    assert!(!json.contains("\\u0000") && !json.contains('\0'), "{json}");
    assert_eq!(e.server.as_deref(), Some("a\u{FFFD}a"));
    assert_eq!(e.operation, "POST /servers/a\u{FFFD}POST /servers/a");
    assert_eq!(e.error.as_deref(), Some("why\u{FFFD}why"));
    let args: Value = serde_json::from_str(e.arguments.as_deref().expect("args")).expect("json");
    assert_eq!(
        args,
        serde_json::json!({ "k\u{FFFD}": ["x\u{FFFD}y", { "n": 1, "d": "\u{FFFD}" }] })
    );
    // Idempotent, and text without a NUL is left alone.
    let once = e.clone();
    e.sanitise();
    assert_eq!(e, once);
    let mut clean = event(1);
    clean.sanitise();
    assert_eq!(clean, event(1));
    assert!(matches!(
        sanitise("plain"),
        std::borrow::Cow::Borrowed("plain")
    ));
    // Redaction cleans the arguments it keeps, too.
    let kept = Redaction::new(&[]).apply(serde_json::json!({ "a": "b\0" }));
    assert_eq!(kept, "{\"a\":\"b\u{FFFD}\"}");
}

#[test]
fn each_hash_covers_the_row_its_position_and_the_previous_hash() {
    let rows = chain(&[event(1), event(2)], 0, GENESIS.to_owned());
    assert_eq!(rows[0].prev_hash, GENESIS);
    assert_eq!(rows[1].prev_hash, rows[0].hash);
    assert_eq!((rows[0].seq, rows[1].seq), (1, 2));
    let base = event(1).chain_hash(1, GENESIS);
    assert_ne!(event(2).chain_hash(1, GENESIS), base, "contents");
    assert_ne!(event(1).chain_hash(2, GENESIS), base, "position");
    assert_ne!(event(1).chain_hash(1, &rows[1].hash), base, "predecessor");
}
