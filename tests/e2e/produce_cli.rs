//! `logpipe-host produce` renders byte for byte what django-logpipe 1.6
//! renders (the shared vectors), and reports bad stdin lines by number.

use std::time::Duration;

use logpipe_tests::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn base64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("vector bytes are base64")
}

#[test]
fn produced_envelopes_match_django_logpipe_byte_for_byte() {
    let text = std::fs::read_to_string(shared_vectors()).expect("../shared/vectors/envelopes.json");
    let vectors: Vec<Value> = serde_json::from_str(&text).expect("vectors");
    let exact: Vec<&Value> = vectors.iter().filter(|v| v["byte_exact"] == true).collect();
    assert!(exact.len() >= 9, "byte-exact vectors present");

    let broker = Broker::start();
    let topic = unique("vectors");
    broker.create_topic(&topic, 1);
    for vector in &exact {
        let expect = &vector["expect"];
        let mut command = host();
        command.args([
            "produce",
            "--bootstrap-servers",
            &broker.bootstrap,
            "--topic",
            &topic,
            "--type",
            expect["type"].as_str().expect("type"),
            "--version",
            &expect["version"].to_string(),
            "--format",
            vector["format"].as_str().expect("format"),
        ]);
        if let Some(producer) = expect["producer"].as_str() {
            command.args(["--producer-id", producer]);
        }
        command.arg(serde_json::to_string(&expect["message"]).expect("message"));
        finish(command, None, LIMIT).assert_code(0);
    }
    let produced = broker.read_all(&topic);
    assert_eq!(produced.len(), exact.len());
    for (vector, record) in exact.iter().zip(&produced) {
        let expected = base64(vector["bytes_b64"].as_str().expect("bytes"));
        assert_eq!(
            record.value,
            expected,
            "{}: {:?} != {:?}",
            vector["name"],
            record.value_text(),
            String::from_utf8_lossy(&expected)
        );
    }
}

#[test]
fn bulk_stdin_sends_good_lines_and_names_bad_ones() {
    let broker = Broker::start();
    let topic = unique("bulk");
    broker.create_topic(&topic, 1);
    let input = b"{\"uuid\":\"a\",\"n\":1}\n{not json\n\n{\"n\":3}\n{\"uuid\":7,\"n\":4}\n";
    let mut command = host();
    command.args([
        "produce",
        "--bootstrap-servers",
        &broker.bootstrap,
        "--topic",
        &topic,
        "--type",
        "thing",
        "--version",
        "2",
        "--key-field",
        "uuid",
    ]);
    let run = finish(command, Some(input), LIMIT);
    run.assert_code(1);
    assert!(
        run.stderr.contains("line 2: not valid JSON"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("line 4: key field \"uuid\" is missing"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("produced 2 record(s)"),
        "{}",
        run.stderr
    );

    let records = broker.read_all(&topic);
    let got: Vec<(Option<String>, String)> = records
        .iter()
        .map(|r| (r.key_text(), r.value_text()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Some("a".into()),
                r#"json:{"type":"thing","version":2,"message":{"uuid":"a","n":1}}"#.into()
            ),
            (
                Some("7".into()),
                r#"json:{"type":"thing","version":2,"message":{"uuid":7,"n":4}}"#.into()
            ),
        ]
    );
}

#[test]
fn producing_to_a_missing_topic_fails_fast() {
    let broker = Broker::start();
    let mut command = host();
    command.args([
        "produce",
        "--bootstrap-servers",
        &broker.bootstrap,
        "--topic",
        "nope",
        "--type",
        "t",
        "--version",
        "1",
        "{}",
    ]);
    let run = finish(command, None, LIMIT);
    run.assert_code(1);
    assert!(
        run.stderr.contains("topic \"nope\" does not exist"),
        "{}",
        run.stderr
    );
}
