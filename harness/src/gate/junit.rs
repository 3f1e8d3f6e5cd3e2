//! `junit.xml`, Jenkins flavour (GATING.md §4): one `<testsuite>` per phase (named by its slug),
//! a `<testcase>` per trial of it and per gated figure of it (classname = the slug). A failed
//! trial or figure is a `<failure>` with the gate's line; INCONCLUSIVE and unmeasured figures are
//! `<skipped>`; seed, backend, git revision, run id and n are `<property>`s of each suite.
//! Gated figures of phases the run did not include are left out (`gate.md` lists them).

use std::fmt::Write;

use super::{FigureGate, GateReport};
use crate::record::{RunData, Status, TrialRecord};

/// What CI needs to find the run again; `git_revision` is the checkout the gate ran in.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    pub git_revision: &'a str,
}

struct Suite<'a> {
    name: String,
    trials: Vec<&'a TrialRecord>,
    figures: Vec<&'a FigureGate>,
}

/// The phase slug a figure key belongs to (`worker-failover.failover_ms` → `worker-failover`).
fn slug_of(key: &str) -> &str {
    key.split_once('.').map_or(key, |(slug, _)| slug)
}

fn suites<'a>(run: &'a RunData, gate: &'a GateReport) -> Vec<Suite<'a>> {
    let mut suites: Vec<Suite> = Vec::new();
    let find = |suites: &mut Vec<Suite<'a>>, name: &str| -> usize {
        match suites.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                suites.push(Suite {
                    name: name.to_string(),
                    trials: vec![],
                    figures: vec![],
                });
                suites.len() - 1
            }
        }
    };
    for t in &run.trials {
        let name = if t.slug.is_empty() { &t.id } else { &t.slug };
        let i = find(&mut suites, name);
        suites[i].trials.push(t);
    }
    // A gated figure of a phase this run did not include is out of scope, not a skipped test.
    for f in &gate.figures {
        if let Some(s) = suites.iter_mut().find(|s| s.name == slug_of(&f.key)) {
            s.figures.push(f);
        }
    }
    suites
}

/// The whole document.
pub fn render(run: &RunData, gate: &GateReport, id: &Identity) -> String {
    let suites = suites(run, gate);
    let mut body = String::new();
    let (mut tests, mut failures, mut skipped, mut time) = (0, 0, 0, 0.0);
    for s in &suites {
        let (t, f, sk, secs) = suite(&mut body, s, run, id);
        tests += t;
        failures += f;
        skipped += sk;
        time += secs;
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"harness {}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\" timestamp=\"{}\">",
        attr(&run.run_id),
        attr(&run.started_at)
    );
    xml.push_str(&body);
    xml.push_str("</testsuites>\n");
    xml
}

/// Writes one suite; returns (tests, failures, skipped, seconds).
fn suite(out: &mut String, s: &Suite, run: &RunData, id: &Identity) -> (usize, usize, usize, f64) {
    let mut cases = String::new();
    let (mut failures, mut skipped, mut time) = (0, 0, 0.0);
    for t in &s.trials {
        let secs = t.duration_us as f64 / 1e6;
        time += secs;
        let name = format!("phase {} {} trial {}/{}", t.id, t.name, t.trial, t.trials);
        let _ = write!(
            cases,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{secs:.3}\"",
            attr(&name),
            attr(&s.name)
        );
        if t.status == Status::Fail {
            failures += 1;
            let msg = t.error.as_deref().unwrap_or("failed");
            let _ = writeln!(
                cases,
                ">\n      <failure message=\"{}\" type=\"phase failed\">{}</failure>\n    </testcase>",
                attr(msg),
                text(&t.details)
            );
        } else {
            cases.push_str("/>\n");
        }
    }
    for f in &s.figures {
        let _ = write!(
            cases,
            "    <testcase name=\"gate {}\" classname=\"{}\" time=\"0\"",
            attr(&f.key),
            attr(&s.name)
        );
        let lines = f.failure_lines();
        let status = f.status();
        if !lines.is_empty() {
            failures += 1;
            let kind = if status == "REGRESSED" {
                "regressed"
            } else {
                "over budget"
            };
            let _ = writeln!(
                cases,
                ">\n      <failure message=\"{}\" type=\"{kind}\">{}</failure>\n    </testcase>",
                attr(&lines.join("; ")),
                text(&lines.join("\n"))
            );
        } else if matches!(status, "INCONCLUSIVE" | "NOT MEASURED" | "UNCONFIRMED") {
            skipped += 1;
            let why = match &f.relative {
                Some(r) if status == "INCONCLUSIVE" => format!("INCONCLUSIVE: {}", r.why),
                Some(_) if status == "UNCONFIRMED" => {
                    "REGRESSED in one batch, not in the other: unconfirmed".to_string()
                }
                _ => "not measured in this run".to_string(),
            };
            let _ = writeln!(
                cases,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                attr(&why)
            );
        } else {
            cases.push_str("/>\n");
        }
    }
    let tests = s.trials.len() + s.figures.len();
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\" timestamp=\"{}\">",
        attr(&s.name),
        attr(&run.started_at)
    );
    out.push_str("    <properties>\n");
    let mut props = vec![
        ("seed".to_string(), run.seed.to_string()),
        ("backend".into(), run.backend.clone()),
        ("git_revision".into(), id.git_revision.to_string()),
        ("run_id".into(), run.run_id.clone()),
        ("n".into(), s.trials.len().to_string()),
    ];
    for f in &s.figures {
        props.push((format!("n.{}", f.key), f.values_us.len().to_string()));
    }
    for (k, v) in props {
        let _ = writeln!(
            out,
            "      <property name=\"{}\" value=\"{}\"/>",
            attr(&k),
            attr(&v)
        );
    }
    out.push_str("    </properties>\n");
    out.push_str(&cases);
    out.push_str("  </testsuite>\n");
    (tests, failures, skipped, time)
}

/// Text content: XML's five escapes, and no control characters but tab, newline and return
/// (XML 1.0 cannot carry them, even escaped).
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// An attribute value: as text, with newlines kept as character references.
fn attr(s: &str) -> String {
    text(s)
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::baseline::Baseline;
    use crate::gate::tests::{gate, run};
    use serde::Deserialize;

    // The Jenkins shape, read back with quick-xml's serde reader (attributes are `@name`).
    #[derive(Debug, Deserialize)]
    struct Suites {
        #[serde(rename = "@tests")]
        tests: usize,
        #[serde(rename = "@failures")]
        failures: usize,
        #[serde(rename = "@skipped")]
        skipped: usize,
        #[serde(rename = "@errors")]
        errors: usize,
        testsuite: Vec<TestSuite>,
    }
    #[derive(Debug, Deserialize)]
    struct TestSuite {
        #[serde(rename = "@name")]
        name: String,
        #[serde(rename = "@tests")]
        tests: usize,
        #[serde(rename = "@failures")]
        failures: usize,
        properties: Properties,
        testcase: Vec<TestCase>,
    }
    #[derive(Debug, Deserialize)]
    struct Properties {
        property: Vec<Property>,
    }
    #[derive(Debug, Deserialize)]
    struct Property {
        #[serde(rename = "@name")]
        name: String,
        #[serde(rename = "@value")]
        value: String,
    }
    #[derive(Debug, Deserialize)]
    struct TestCase {
        #[serde(rename = "@name")]
        name: String,
        #[serde(rename = "@classname")]
        classname: String,
        #[serde(rename = "@time")]
        time: f64,
        failure: Option<Message>,
        skipped: Option<Message>,
    }
    #[derive(Debug, Deserialize)]
    struct Message {
        #[serde(rename = "@message")]
        message: String,
    }

    #[test]
    fn junit_parses_back_with_a_case_per_trial_and_gated_figure() {
        let slow: Vec<f64> = (0..5).map(|i| 2000.0 + 10.0 * i as f64).collect();
        let fast: Vec<f64> = (0..5).map(|i| 1000.0 + 10.0 * i as f64).collect();
        let base = Baseline::from_run(&run(
            600,
            &[
                ("coordinator-failover", "election_ms", &fast),
                ("worker-failover", "failover_ms", &fast),
            ],
        ))
        .unwrap();
        let mut cand = run(
            600,
            &[
                ("coordinator-failover", "election_ms", &slow),
                ("worker-failover", "failover_ms", &fast[..4]),
            ],
        );
        cand.trials[8].status = Status::Fail;
        cand.trials[8].error = Some("await <leader> & \"x\"\u{1}".into());
        let g = gate(&[
            ("coordinator-failover.election_ms", "10s"),
            ("worker-failover.failover_ms", "10s"),
            ("hung-worker.detection_ms", "10s"),
        ]);
        let report = crate::gate::evaluate(&cand, &g, Some(&base), false).unwrap();
        let xml = render(
            &cand,
            &report,
            &Identity {
                git_revision: "abc123",
            },
        );
        let doc: Suites = quick_xml::de::from_str(&xml).unwrap();
        // 9 trials + 2 gated figures; the failed trial and the regressed election fail; the
        // 4-trial failover (INCONCLUSIVE) is skipped; hung-worker did not run: left out.
        assert_eq!(
            (doc.tests, doc.failures, doc.skipped, doc.errors),
            (11, 2, 1, 0),
            "{xml}"
        );
        let names: Vec<&str> = doc.testsuite.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["coordinator-failover", "worker-failover"]);
        let election = &doc.testsuite[0];
        assert_eq!((election.tests, election.failures), (6, 1));
        let props: Vec<(&str, &str)> = election
            .properties
            .property
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(
            props,
            [
                ("seed", "7"),
                ("backend", "process"),
                ("git_revision", "abc123"),
                ("run_id", "r1"),
                ("n", "5"),
                ("n.coordinator-failover.election_ms", "5")
            ]
        );
        let case = &election.testcase[0];
        assert_eq!(
            (case.name.as_str(), case.classname.as_str(), case.time),
            ("phase 5 Phase trial 1/5", "coordinator-failover", 1.5)
        );
        let gated = &election.testcase[5];
        assert_eq!(gated.name, "gate coordinator-failover.election_ms");
        // p = 1/252 (5×5 apart), Holm-adjusted ×2: the 4-trial failover also has a p.
        assert_eq!(
            gated.failure.as_ref().unwrap().message,
            "coordinator-failover.election_ms p50 2.02 s vs 1.02 s, ratio 1.98 [1.94, 2.02], p = 0.008"
        );
        let failover = &doc.testsuite[1];
        // The control character is dropped; the markup characters survive the round trip.
        assert_eq!(
            failover.testcase[3].failure.as_ref().unwrap().message,
            "await <leader> & \"x\""
        );
        assert!(failover.testcase[4]
            .skipped
            .as_ref()
            .unwrap()
            .message
            .starts_with("INCONCLUSIVE: n = 4 candidate, 5 baseline"));
    }
}
