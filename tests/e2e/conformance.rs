//! One conformance suite for the guests of every language (built by
//! scripts/build-guests into target/guests/<language>/): the same identity,
//! the same echo output byte for byte, the same person verdicts, and the
//! same treatment under the host's limits.
//!
//! Handlers are called in process for exact outcomes. With
//! LOGPIPE_REQUIRE_ALL_GUESTS=1 (scripts/test) every language must be there.

use std::path::PathBuf;
use std::time::Duration;

use logpipe_host::component::{GuestLimits, HandleOutcome};
use logpipe_host::policy::ErrorClass;
use logpipe_tests::in_process::{Loaded, Sent, raw_envelope};
use logpipe_tests::root;

const LANGUAGES: [&str; 4] = ["rust", "python", "js", "c"];

/// The languages built here, each with its guests folder.
fn languages() -> Vec<(&'static str, PathBuf)> {
    let require_all = std::env::var("LOGPIPE_REQUIRE_ALL_GUESTS").is_ok_and(|v| v == "1");
    let mut found = Vec::new();
    for language in LANGUAGES {
        let dir = root().join("target/guests").join(language);
        if dir.join("echo.wasm").is_file() {
            found.push((language, dir));
        } else {
            assert!(
                !require_all,
                "no {language} guests in {}: run scripts/build-guests",
                dir.display()
            );
            eprintln!("conformance: {language} guests not built, skipped");
        }
    }
    assert!(
        !found.is_empty(),
        "no guests built: run scripts/build-guests"
    );
    found
}

fn limits() -> GuestLimits {
    GuestLimits {
        call_timeout: Duration::from_millis(500),
        ..GuestLimits::default()
    }
}

/// Bodies every echo must pass through unchanged.
const BODIES: [&str; 6] = [
    r#"{"text":"Zürich — Straße 東京 🚀","escaped":"\u00e9\n\"q\""}"#,
    r#"{"id":9007199254740993,"big":123456789012345678901234567890,"neg":-42,"f":47.3769,"e":1.5e+300}"#,
    r#"{"nested":{"a":[1,{"b":null,"c":[true,false]}],"d":{}}}"#,
    r#"{}"#,
    r#"[1,"two",3.0]"#,
    r#"{ "spaced" : [ 1 , 2 ] }"#,
];

fn echo_outputs(language: &str, dir: &std::path::Path) -> Vec<Sent> {
    let mut loaded = Loaded::from_file(&dir.join("echo.wasm"), None, limits(), false);
    let handler = loaded.handler("echo", 1);
    for (i, body) in BODIES.iter().enumerate() {
        let key = (i % 2 == 0).then(|| format!("key-{i}"));
        let outcome = handler.handle(&raw_envelope("echo", body, key.as_deref()));
        assert_eq!(outcome, HandleOutcome::Handled, "{language} echo of {body}");
    }
    loaded.sink.sent.lock().expect("sink").clone()
}

#[test]
fn every_language_declares_the_same_handlers() {
    for (language, dir) in languages() {
        for (file, message_type) in [("echo", "echo"), ("person", "person"), ("chaos", "chaos")] {
            let path = dir.join(format!("{file}.wasm"));
            if !path.is_file() {
                assert!(
                    file == "person" && language == "c",
                    "{language} lacks {file}.wasm"
                );
                continue;
            }
            let mut loaded = Loaded::from_file(&path, None, limits(), false);
            let handler = loaded.handler(message_type, 1);
            assert_eq!(
                (handler.message_type.as_str(), handler.version),
                (message_type, 1),
                "{language} {file}"
            );
        }
    }
}

#[test]
fn echo_output_is_byte_identical_across_languages() {
    let mut reference: Option<(&str, Vec<Sent>)> = None;
    for (language, dir) in languages() {
        let sent = echo_outputs(language, &dir);
        assert_eq!(
            sent.len(),
            BODIES.len(),
            "{language}: one output per record"
        );
        for (i, (topic, key, payload)) in sent.iter().enumerate() {
            assert_eq!(topic, "echo-out", "{language}");
            assert_eq!(
                key.as_deref(),
                (i % 2 == 0).then(|| format!("key-{i}")).as_deref(),
                "{language}: key kept"
            );
            let text = String::from_utf8_lossy(payload);
            assert!(
                text.starts_with(r#"json:{"type":"echo","version":1,"message":"#),
                "{language}: {text}"
            );
        }
        match &reference {
            None => reference = Some((language, sent)),
            Some((first, expected)) => {
                for (i, (ours, theirs)) in sent.iter().zip(expected).enumerate() {
                    assert_eq!(
                        String::from_utf8_lossy(&ours.2),
                        String::from_utf8_lossy(&theirs.2),
                        "{language} and {first} differ on body {i}"
                    );
                    assert_eq!(ours, theirs);
                }
            }
        }
    }
    // The host renders compactly and keeps number text exactly.
    let (_, sent) = reference.expect("at least one language");
    assert_eq!(
        String::from_utf8_lossy(&sent[1].2),
        r#"json:{"type":"echo","version":1,"message":{"id":9007199254740993,"big":123456789012345678901234567890,"neg":-42,"f":47.3769,"e":1.5e+300}}"#
    );
    assert_eq!(
        String::from_utf8_lossy(&sent[5].2),
        r#"json:{"type":"echo","version":1,"message":{"spaced":[1,2]}}"#
    );
}

#[test]
fn person_handlers_accept_and_reject_the_same_records() {
    let valid = r#"{"uuid":"5b0b3f4e-2a47-4b6e-9d6e-6d3c1a9f2b11","first_name":"Joe","last_name":"Schmoe"}"#;
    let upper =
        r#"{"uuid":"5B0B3F4E-2A47-4B6E-9D6E-6D3C1A9F2B11","first_name":"Ana","last_name":"López"}"#;
    let invalid = [
        r#"{"uuid":"not-a-uuid","first_name":"Joe","last_name":"Schmoe"}"#,
        r#"{"uuid":"5b0b3f4e-2a47-4b6e-9d6e-6d3c1a9f2b1","first_name":"Joe","last_name":"Schmoe"}"#,
        r#"{"uuid":"5b0b3f4e-2a47-4b6e-9d6e-6d3c1a9f2b11","first_name":"  ","last_name":"Schmoe"}"#,
        r#"{"uuid":"5b0b3f4e-2a47-4b6e-9d6e-6d3c1a9f2b11","first_name":"Joe"}"#,
        r#"{"uuid":"5b0b3f4e-2a47-4b6e-9d6e-6d3c1a9f2b11","first_name":"Joe","last_name":7}"#,
        r#"["not","an","object"]"#,
    ];
    for (language, dir) in languages() {
        let path = dir.join("person.wasm");
        if !path.is_file() {
            continue;
        }
        let mut loaded = Loaded::from_file(&path, None, limits(), false);
        let handler = loaded.handler("person", 1);
        for body in [valid, upper] {
            assert_eq!(
                handler.handle(&raw_envelope("person", body, None)),
                HandleOutcome::Handled,
                "{language}: {body}"
            );
        }
        for body in invalid {
            let outcome = handler.handle(&raw_envelope("person", body, None));
            assert!(
                matches!(outcome, HandleOutcome::Rejected(_)),
                "{language}: {body} gave {outcome:?}"
            );
        }
        let sent = loaded.sink.sent.lock().expect("sink").clone();
        let rendered: Vec<(String, Option<String>, String)> = sent
            .into_iter()
            .map(|(topic, key, payload)| {
                (topic, key, String::from_utf8_lossy(&payload).into_owned())
            })
            .collect();
        assert_eq!(
            rendered,
            vec![
                (
                    "people-index".to_owned(),
                    Some("5b0b3f4e-2a47-4b6e-9d6e-6d3c1a9f2b11".to_owned()),
                    r#"json:{"type":"person-indexed","version":1,"message":{"uuid":"5b0b3f4e-2a47-4b6e-9d6e-6d3c1a9f2b11","full_name":"Joe Schmoe"}}"#.to_owned(),
                ),
                (
                    "people-index".to_owned(),
                    Some("5B0B3F4E-2A47-4B6E-9D6E-6D3C1A9F2B11".to_owned()),
                    r#"json:{"type":"person-indexed","version":1,"message":{"uuid":"5B0B3F4E-2A47-4B6E-9D6E-6D3C1A9F2B11","full_name":"Ana López"}}"#.to_owned(),
                ),
            ],
            "{language}"
        );
    }
}

#[test]
fn every_language_is_held_to_the_same_limits() {
    for (language, dir) in languages() {
        let mut loaded = Loaded::from_file(&dir.join("chaos.wasm"), None, limits(), false);
        let handler = loaded.handler("chaos", 1);
        let call =
            |action: &str| raw_envelope("chaos", &format!(r#"{{"action":"{action}"}}"#), None);
        assert_eq!(
            handler.handle(&call("ok")),
            HandleOutcome::Handled,
            "{language}"
        );
        assert_eq!(
            handler.handle(&call("reject")),
            HandleOutcome::Rejected("asked to reject".into()),
            "{language}"
        );
        assert_eq!(
            handler.handle(&call("retry")),
            HandleOutcome::Retry("asked to retry".into()),
            "{language}"
        );
        match handler.handle(&call("produce-bad-json")) {
            HandleOutcome::Rejected(reason) => assert!(
                reason.starts_with("produce failed: message body is not valid JSON"),
                "{language}: {reason}"
            ),
            other => panic!("{language} produce-bad-json: {other:?}"),
        }
        for (action, class) in [
            ("loop", ErrorClass::Deadline),
            ("alloc", ErrorClass::Memory),
            ("panic", ErrorClass::Trap),
        ] {
            match handler.handle(&call(action)) {
                HandleOutcome::Trapped { class: got, reason } => {
                    assert_eq!(got, class, "{language} {action}: {reason}");
                }
                other => panic!("{language} {action}: expected a trap, got {other:?}"),
            }
            // A fresh instance takes over.
            assert_eq!(
                handler.handle(&call("ok")),
                HandleOutcome::Handled,
                "{language} after {action}"
            );
        }
    }
}

/// The store through each language's SDK (C: the raw bindings): writes,
/// reads of uncommitted writes, ordered scans by prefix, deletes.
#[test]
fn every_language_reads_its_own_store_writes() {
    for (language, dir) in languages() {
        let mut loaded = Loaded::from_file(&dir.join("chaos.wasm"), None, limits(), false);
        let handler = loaded.handler("chaos", 1);
        let call = |action: &str, key: &str| {
            let body = format!(r#"{{"action":"{action}","key":"{key}"}}"#);
            raw_envelope("chaos", &body, None)
        };
        for _ in 0..3 {
            assert_eq!(
                handler.handle(&call("store-add", "n/b")),
                HandleOutcome::Handled,
                "{language}"
            );
        }
        assert_eq!(
            handler.handle(&call("store-add", "n/a")),
            HandleOutcome::Handled
        );
        let expect = |outcome: HandleOutcome, text: &str| {
            assert_eq!(outcome, HandleOutcome::Rejected(text.into()), "{language}");
        };
        expect(handler.handle(&call("store-get", "n/b")), "got 3");
        expect(handler.handle(&call("store-scan", "n/")), "keys n/a,n/b");
        assert_eq!(
            handler.handle(&call("store-delete", "n/b")),
            HandleOutcome::Handled
        );
        expect(handler.handle(&call("store-get", "n/b")), "got nothing");
        expect(handler.handle(&call("store-scan", "n/")), "keys n/a");
    }
}
