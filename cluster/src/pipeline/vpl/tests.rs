//! Tests of the VPL subset: parsing, errors with positions, evaluation.

use super::*;
use serde_json::json;

const SEED: &str = r#"event SensorReading { sensor_id: str, temperature: float, seq: int }
stream Input = SensorReading.from(mqtt_1, topic: "e2e/input/1")
stream HighTemp = Input.where(temperature > 50.0)
stream Output = HighTemp.to(mqtt_1, topic: "e2e/output")
"#;

fn reading(sensor: &str, temperature: Json, seq: Json) -> Json {
    json!({"event_type": "SensorReading", "sensor_id": sensor, "temperature": temperature,
               "seq": seq, "sent_at_us": 1_700_000_000_123_456_u64})
}

fn run(p: &Program, event: &Json) -> Result<Vec<Output>, RejectReason> {
    p.process("e2e/input/1", event.to_string().as_bytes())
}

/// Whether the seed pipeline, with `cond` as its filter, forwards `event`.
fn passes(cond: &str, event: &Json) -> bool {
    let p =
        parse(&SEED.replace("temperature > 50.0", cond)).unwrap_or_else(|e| panic!("{cond}: {e}"));
    run(&p, event)
        .unwrap_or_else(|r| panic!("{cond}: {r}"))
        .len()
        == 1
}

/// (line, column, construct) of the error `source` must produce.
fn err_at(source: &str) -> (usize, usize, String) {
    let e = parse(source)
        .err()
        .unwrap_or_else(|| panic!("expected an error for {source:?}"));
    (e.line, e.column, e.construct)
}

#[test]
fn seed_has_one_source_and_one_sink() {
    let p = parse(SEED).expect("seed parses");
    let (connector, params) = ("mqtt_1".to_string(), BTreeMap::new());
    let source = SourceSpec {
        stream: "Input".into(),
        event_type: "SensorReading".into(),
        connector: connector.clone(),
        topic: "e2e/input/1".into(),
        params: params.clone(),
    };
    let sink = SinkSpec {
        stream: "Output".into(),
        connector,
        topic: "e2e/output".into(),
        params,
    };
    assert_eq!((p.sources(), p.sinks()), (vec![source], vec![sink]));
    assert_eq!(p.input_topics(), vec!["e2e/input/1".to_string()]);
}

#[test]
fn forwards_hot_readings_unchanged_and_drops_the_rest() {
    let p = parse(SEED).expect("seed parses");
    let event = reading("sensor_1", json!(75.0), json!(7));
    let out = run(&p, &event).expect("valid event");
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].topic.as_str(), out[0].connector.as_str()),
        ("e2e/output", "mqtt_1")
    );
    assert_eq!(
        serde_json::from_slice::<Json>(&out[0].payload).ok(),
        Some(event)
    );
    assert!(!out[0].payload.contains(&b' '), "compact serialization");
    let count = |t: Json| run(&p, &reading("s", t, json!(1))).map(|o| o.len());
    assert_eq!(count(json!(25.0)), Ok(0));
    assert_eq!(count(json!(50.0)), Ok(0), "boundary: > is strict");
    assert_eq!(count(json!(75)), Ok(1), "an integer fits a float field");
}

#[test]
fn precedence_and_operators() {
    let e = reading("s1", json!(75.0), json!(2));
    let cases = [
        (
            "temperature > 50.0 or seq == 1 and sensor_id == \"x\"",
            true,
        ),
        (
            "(temperature > 50.0 or seq == 1) and sensor_id == \"x\"",
            false,
        ),
        ("not false and false", false),
        ("not (false and false)", true),
        ("not (temperature > 50.0)", false),
        ("!(seq == 1) || temperature >= 75.0 && seq != 2", true),
        (
            "temperature >= 75 and temperature <= 75.0 and seq < 3 and seq > 1",
            true,
        ),
        ("seq == 2.0 and -temperature < -50.0", true),
        ("true == not false", true),
        ("sensor_id < \"s2\"", true),
    ];
    for (cond, expected) in cases {
        assert_eq!(passes(cond, &e), expected, "{cond}");
    }
}

#[test]
fn string_equality_and_escapes() {
    let cond = "sensor_id == \"sensor_1\"";
    assert!(passes(cond, &reading("sensor_1", json!(1.0), json!(1))));
    assert!(!passes(cond, &reading("sensor_2", json!(1.0), json!(1))));
    assert!(passes(
        r#"sensor_id == "a\"b\\c""#,
        &reading("a\"b\\c", json!(1.0), json!(1))
    ));
}

#[test]
fn chains_comments_separators_and_several_sinks() {
    let src = "# sensors\nevent E { v: int, ok: bool, }\n\n\
                   stream In = E.from(mqtt_1, topic: \"in\", qos: 1, client_id: \"c-1\") // src\n\
                   stream Pos = In.where(v > 0).where(ok); stream A = Pos.to(mqtt_1, topic: \"a\")\n\
                   stream B = In.where(v > 10).to(mqtt_2,\n    topic: \"b\")\n";
    let p = parse(src).unwrap_or_else(|e| panic!("{e}"));
    let params: Vec<_> = p.sources().into_iter().flat_map(|s| s.params).collect();
    let expected =
        [("client_id", "c-1"), ("qos", "1")].map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(params, expected);
    let topics = |payload: &str| -> Vec<String> {
        let out = p.process("in", payload.as_bytes()).expect("accepted");
        out.into_iter().map(|o| o.topic).collect()
    };
    assert_eq!(topics(r#"{"v": 20, "ok": true}"#), ["a", "b"]);
    assert_eq!(topics(r#"{"v": 5, "ok": true}"#), ["a"]);
    assert_eq!(topics(r#"{"v": 20, "ok": false}"#), ["b"]);
    assert!(topics(r#"{"v": -1, "ok": true}"#).is_empty());
}

#[test]
fn errors_point_at_the_construct() {
    let head = "event SensorReading { sensor_id: str, temperature: float, seq: int }\n\
                    stream Input = SensorReading.from(mqtt_1, topic: \"e2e/input/1\")\n";
    let line3 = |l: &str| err_at(&format!("{head}{l}\n"));
    let e = parse(&format!("{head}stream W = Input.window(5s)\n")).err();
    assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("line 3, column 17: unsupported construct '.window': only .from, .where and .to are supported")
        );
    let cases = [
        ("stream W = Input.window(5s)", 17, ".window"),
        ("stream S = Input.select(seq)", 17, ".select"),
        ("stream H = Input.where(humidity > 5.0)", 24, "humidity"),
        ("stream H = Nowhere.where(seq > 1)", 12, "Nowhere"),
        (
            "stream O = Input.to(mqtt_1, topic: \"e2e/out)",
            36,
            "\"e2e/out)",
        ),
        ("stream H = Input.where(seq @ 1)", 28, "@"),
        ("pattern P = Input -> Input", 1, "pattern"),
        ("emit Input", 1, "emit"),
        ("stream H = Input.where(sensor_id > 5)", 34, ">"),
        ("stream H = Input.where(not temperature > 1.0)", 24, "not"),
        ("stream H = Input.where(seq)", 24, "seq"),
        ("stream H = Input.where(seq > 1 and seq)", 32, "and"),
        ("stream H = Input.where(1 < seq < 3)", 32, "<"),
        ("stream H = Input.where(abs(seq) > 1)", 24, "abs("),
        ("stream H = Input.where(seq > 5s)", 30, "5s"),
        ("stream H = SensorReading.where(seq > 1)", 25, ".where"),
        ("stream H = Input.to(mqtt_1, qos: 1)", 17, ".to"),
        ("stream Input = Input.where(true)", 8, "Input"),
    ];
    for (src, column, construct) in cases {
        assert_eq!(line3(src), (3, column, construct.to_string()), "{src}");
    }
    let no_sink = err_at("event E { a: int }\nstream S = E.from(m, topic: \"t\")\n");
    assert_eq!(no_sink, (3, 1, "end of input".to_string()));
}

#[test]
fn rejects_bad_events() {
    let p = parse(SEED).expect("seed parses");
    let raw = |s: &str| p.process("e2e/input/1", s.as_bytes());
    assert_eq!(raw("not json"), Err(RejectReason::NotJson));
    assert_eq!(raw("[1, 2]"), Err(RejectReason::NotJson));
    let missing = r#"{"sensor_id": "s", "temperature": 80.0}"#;
    assert_eq!(raw(missing), Err(RejectReason::MissingField("seq".into())));
    let mut e = reading("s", json!(80.0), json!("7"));
    assert_eq!(run(&p, &e), Err(RejectReason::BadFieldType("seq".into())));
    e["seq"] = json!(1.5);
    assert_eq!(run(&p, &e), Err(RejectReason::BadFieldType("seq".into())));
    e["seq"] = json!(1);
    e["event_type"] = json!("Other");
    assert_eq!(
        run(&p, &e),
        Err(RejectReason::WrongEventType("Other".into()))
    );
    let ok = reading("s", json!(80.0), json!(1)).to_string();
    let other = p.process("elsewhere", ok.as_bytes());
    assert_eq!(other, Err(RejectReason::UnknownTopic("elsewhere".into())));
}

#[test]
fn program_survives_a_serde_round_trip() {
    let p = parse(SEED).expect("seed parses");
    let back: Program = serde_json::to_string(&p)
        .and_then(|s| serde_json::from_str(&s))
        .expect("round trip");
    assert_eq!(back, p);
    assert_eq!(
        run(&back, &reading("s", json!(60.0), json!(1))).map(|o| o.len()),
        Ok(1)
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let open = SEED.replace("temperature > 50.0)", "");
    let deep = |s: &str| open.replacen(".where(", &format!(".where({}", s.repeat(10_000)), 1);
    let head = "event E { a: int }\nstream X = E.from(m, topic: \"t\")";
    let inputs = [
        String::new(),
        "\n\n# nothing\n".into(),
        "stream".into(),
        "stream X =".into(),
        "event E {".into(),
        "event E { a: int".into(),
        "event E { a: }".into(),
        "))))((((".into(),
        "\"".into(),
        "\\".into(),
        "é".into(),
        format!("{head}.where((a > 1)\n"),
        format!("{head}.where(a > 1))\n"),
        format!("{head}.where(a > 99999999999999999999)\n"),
        "(".repeat(10_000),
        deep("("),
        deep("not "),
        deep("-"),
        deep("!"),
    ];
    for src in &inputs {
        assert!(
            parse(src).is_err(),
            "should fail: {:?}",
            src.chars().take(80).collect::<String>()
        );
    }
    let e = parse(&deep("(")).err().map(|e| e.message);
    assert_eq!(
        e,
        Some(format!(
            "expression nested deeper than {MAX_EXPR_DEPTH} levels"
        ))
    );
}
