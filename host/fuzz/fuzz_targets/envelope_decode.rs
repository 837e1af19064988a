//! The envelope decoder on arbitrary bytes: it must never panic, and what it
//! accepts must survive a render → decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logpipe_host::envelope::{decode, render};

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = decode(data) else {
        return;
    };
    let Some(version) = envelope.version.as_number() else {
        return;
    };
    let rendered = render(
        envelope.format,
        &envelope.message_type,
        version,
        &envelope.body,
        envelope.producer.as_deref(),
    );
    // A body the decoder produced is always valid JSON; rendering it can
    // only fail for numbers msgpack cannot hold.
    let Ok(rendered) = rendered else {
        return;
    };
    let again = decode(&rendered).expect("a rendered envelope decodes");
    assert_eq!(again.message_type, envelope.message_type);
    assert_eq!(again.version, envelope.version);
    assert_eq!(again.producer, envelope.producer);
    let before: serde_json::Value = serde_json::from_str(&envelope.body).expect("body is JSON");
    let after: serde_json::Value = serde_json::from_str(&again.body).expect("body is JSON");
    assert_eq!(before, after);
});
