//! Phase files: loading `phases/*.toml`, validating every step against the topology and the
//! backend before any node starts, and choosing which phases a `--phases` selection runs.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::step::{is_name, Fault, Step, Target};

/// A validated phase.
#[derive(Debug, Clone)]
pub struct Phase {
    /// `"5"` for numbered phases, else the slug.
    pub id: String,
    pub number: Option<u32>,
    /// File stem without the number: `coordinator-failover`.
    pub slug: String,
    pub name: String,
    pub description: String,
    /// Phases (id or slug) that must have run once before this one.
    pub requires: Vec<String>,
    /// Detail-line template: `{binding}` → node number, `{timing_ms}` → seconds.
    pub detail: String,
    pub steps: Vec<Step>,
    /// `file:line` of each step, for run-time errors.
    pub step_locations: Vec<String>,
    pub path: PathBuf,
}

/// A phase file the harness refuses, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for PhaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for PhaseError {}

/// What the run can offer: checked against every step before anything starts.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub backend: &'static str,
    pub coordinators: u32,
    pub workers: u32,
    pub broker: bool,
    pub faults: Vec<Fault>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseFile {
    id: Option<u32>,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    detail: String,
    #[serde(rename = "step", default)]
    steps: Vec<toml::Spanned<Step>>,
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Parse and validate one phase file's text.
pub fn parse(path: &Path, text: &str, caps: &Capabilities) -> Result<Phase, PhaseError> {
    let err_at = |offset: usize, message: String| {
        let (line, column) = line_col(text, offset);
        PhaseError {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    };
    let file: PhaseFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        err_at(offset, e.message().trim().to_string())
    })?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let slug = match stem.split_once('-') {
        Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest.to_string(),
        _ => stem.clone(),
    };
    let mut bound: HashSet<String> = HashSet::new();
    let mut marks: HashSet<String> = HashSet::new();
    let mut timings: HashSet<String> = HashSet::new();
    let mut steps = Vec::new();
    let mut step_locations = Vec::new();
    for spanned in file.steps {
        let offset = spanned.span().start;
        let step = spanned.into_inner();
        let fail = |message: String| err_at(offset, format!("step `{}`: {message}", step.action()));
        if step.needs_workers() && (caps.workers == 0 || !caps.broker) {
            return Err(fail(format!(
                "needs workers and a broker, and this {} cluster has {} workers{}",
                caps.backend,
                caps.workers,
                if caps.broker { "" } else { " and no broker" }
            )));
        }
        for fault in step.faults_needed() {
            if !caps.faults.contains(&fault) {
                return Err(fail(format!(
                    "the {} backend cannot {fault} a node",
                    caps.backend
                )));
            }
        }
        if let Step::Nemesis(n) = &step {
            check_nemesis(n).map_err(&fail)?;
            bound.insert("nemesis".into());
            timings.insert("converge_ms".into());
        }
        if let Step::FillLog(_) = &step {
            bound.insert("fill".into());
            bound.insert("log_index".into());
            timings.insert("fill_ms".into());
        }
        for target in step.targets() {
            check_target(target, caps, &bound).map_err(&fail)?;
        }
        if let Step::MeasureGap(g) = &step {
            check_gap(g, &marks).map_err(&fail)?;
            timings.insert(g.name.clone());
        }
        if let Step::Measure(m) = &step {
            if !is_name(&m.name) || !m.name.ends_with("_ms") {
                return Err(fail(format!(
                    "timing name '{}' must be a name ending in _ms",
                    m.name
                )));
            }
            for mark in [&m.from, &m.to] {
                if !marks.contains(mark) {
                    return Err(fail(format!(
                        "mark '{mark}' is not recorded by an earlier step (known: {})",
                        sorted(&marks)
                    )));
                }
            }
            timings.insert(m.name.clone());
        }
        if let Step::AssertWriteAnswered(w) = &step {
            if !is_name(&w.name) || !w.name.ends_with("_ms") {
                return Err(fail(format!(
                    "timing name '{}' must be a name ending in _ms",
                    w.name
                )));
            }
            timings.insert(w.name.clone());
        }
        let mark_refs: Vec<&String> = match &step {
            Step::Hold(h) => h.since.iter().collect(),
            Step::AssertWorkersReady(a) => a.since.iter().collect(),
            Step::AssertNoMoves(a) => vec![&a.since],
            _ => vec![],
        };
        for mark in mark_refs {
            if !marks.contains(mark) {
                return Err(fail(format!(
                    "mark '{mark}' is not recorded by an earlier step (known: {})",
                    sorted(&marks)
                )));
            }
        }
        if let Some(name) = step.binds() {
            if !is_name(name) || !bound.insert(name.to_string()) {
                return Err(fail(format!(
                    "cannot bind '{name}': not a name or already bound"
                )));
            }
        }
        if let Some(mark) = step.marks() {
            if !is_name(mark) || !marks.insert(mark.to_string()) {
                return Err(fail(format!(
                    "cannot mark '{mark}': not a name or already used"
                )));
            }
        }
        let (line, _) = line_col(text, offset);
        step_locations.push(format!("{}:{line}", path.display()));
        steps.push(step);
    }
    if steps.is_empty() {
        return Err(err_at(0, "a phase needs at least one [[step]]".into()));
    }
    // `{deploy_<group>}`: whether a deploy created the group or found it deployed.
    for step in &steps {
        if let Step::Deploy(d) = step {
            bound.insert(format!("deploy_{}", d.group));
        }
    }
    // `{events}`: "delivered/expected events" of the trial, when it publishes anything.
    if steps
        .iter()
        .any(|s| matches!(s, Step::Publish(_) | Step::TrafficStart(_)))
    {
        bound.insert("events".into());
    }
    for placeholder in placeholders(&file.detail) {
        if !bound.contains(placeholder)
            && !timings.contains(placeholder)
            && !crate::topology::is_detail_value(placeholder)
        {
            let offset = text.find("detail").unwrap_or(0);
            return Err(err_at(
                offset,
                format!(
                    "detail uses {{{placeholder}}}, which no step binds or measures (known: {})",
                    sorted(&bound.union(&timings).cloned().collect())
                ),
            ));
        }
    }
    Ok(Phase {
        id: file.id.map_or_else(|| slug.clone(), |n| n.to_string()),
        number: file.id,
        slug,
        name: file.name,
        description: file.description,
        requires: file.requires,
        detail: file.detail,
        steps,
        step_locations,
        path: path.to_path_buf(),
    })
}

fn check_nemesis(n: &crate::step::NemesisArgs) -> Result<(), String> {
    for (name, [lo, hi]) in [("fault_ms", n.fault_ms), ("gap_ms", n.gap_ms)] {
        if lo > hi {
            return Err(format!(
                "{name} = [{lo}, {hi}]: the first bound exceeds the second"
            ));
        }
    }
    if n.gap_ms[0] == 0 {
        return Err("gap_ms must start above 0".into());
    }
    if n.max_concurrent == 0 {
        return Err("max_concurrent must be at least 1".into());
    }
    if n.faults.as_ref().is_some_and(Vec::is_empty) || n.targets.as_ref().is_some_and(Vec::is_empty)
    {
        return Err("faults and targets, when given, must name at least one".into());
    }
    Ok(())
}

fn sorted(set: &HashSet<String>) -> String {
    let s: BTreeSet<&String> = set.iter().collect();
    if s.is_empty() {
        "none".into()
    } else {
        s.into_iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// `{name}` placeholders of a detail template.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push(&rest[start + 1..start + len]);
        rest = &rest[start + len + 1..];
    }
    out
}

fn check_target(
    target: &Target,
    caps: &Capabilities,
    bound: &HashSet<String>,
) -> Result<(), String> {
    match target {
        Target::Coordinator(n) if *n > caps.coordinators => Err(format!(
            "unknown target '{target}': the cluster has {} coordinators",
            caps.coordinators
        )),
        Target::Worker(n) if *n > caps.workers => Err(format!(
            "unknown target '{target}': the cluster has {} workers",
            caps.workers
        )),
        Target::WorkerHosting(_) | Target::HomeOf(_) if caps.workers == 0 => Err(format!(
            "target '{target}' needs workers, and this cluster has none"
        )),
        Target::Broker if !caps.broker => Err(format!(
            "unknown target '{target}': this cluster has no broker"
        )),
        Target::Bound(name) if !bound.contains(name) => Err(format!(
            "target '{target}' is not bound by an earlier step (bound: {})",
            sorted(bound)
        )),
        Target::HomeOf(inner) => match inner.parse::<Target>() {
            Ok(t) => check_target(&t, caps, bound),
            Err(e) => Err(e),
        },
        _ => Ok(()),
    }
}

/// Load and validate every `*.toml` in `dir`, sorted by file name. All errors are returned.
pub fn load_dir(dir: &Path, caps: &Capabilities) -> Result<Vec<Phase>, Vec<PhaseError>> {
    let read_err = |message: String| {
        vec![PhaseError {
            path: dir.to_path_buf(),
            line: 0,
            column: 0,
            message,
        }]
    };
    let entries = std::fs::read_dir(dir).map_err(|e| read_err(format!("cannot read: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut phases = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse(&path, &text, caps) {
                Ok(p) => phases.push(p),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.extend(read_err(format!("{}: {e}", path.display()))),
        }
    }
    let mut ids = HashSet::new();
    for p in &phases {
        if !ids.insert(p.id.clone()) {
            errors.push(PhaseError {
                path: p.path.clone(),
                line: 1,
                column: 1,
                message: format!("phase id '{}' is used by another file too", p.id),
            });
        }
    }
    if errors.is_empty() {
        Ok(phases)
    } else {
        Err(errors)
    }
}

/// One entry of a run plan: a phase and how many trials it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub phase: usize,
    pub trials: u32,
}

/// Resolve a `--phases` selection (`all`, `3`, `3,5`, `7,0`, `3,3,3`, `worker-failover`) into a
/// plan: the selected phases in the order given, each as often as given (`all` is the numbered
/// phases in order), each preceded by whatever prerequisites have not run yet, which run once.
/// Selected phases run `repeat` times, except those that are themselves prerequisites of
/// another (setup runs once each time it is named).
pub fn plan(phases: &[Phase], selection: &str, repeat: u32) -> Result<Vec<Planned>, String> {
    let find = |token: &str| -> Result<usize, String> {
        phases
            .iter()
            .position(|p| p.id == token || p.slug == token)
            .ok_or_else(|| {
                let known: Vec<String> = phases
                    .iter()
                    .map(|p| match p.number {
                        Some(n) => format!("{n} ({})", p.slug),
                        None => p.slug.clone(),
                    })
                    .collect();
                format!("unknown phase '{token}'; known: all, {}", known.join(", "))
            })
    };
    let mut numbered: Vec<(u32, usize)> = phases
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.number.map(|n| (n, i)))
        .collect();
    numbered.sort();
    let mut selected = Vec::new();
    for token in selection
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        if token == "all" {
            selected.extend(numbered.iter().map(|(_, i)| *i));
        } else {
            selected.push(find(token)?);
        }
    }
    if selected.is_empty() {
        return Err("no phase selected".into());
    }
    let mut prerequisites = HashSet::new();
    for p in phases {
        for r in &p.requires {
            prerequisites
                .insert(find(r).map_err(|e| format!("{}: requires: {e}", p.path.display()))?);
        }
    }
    let mut ran = Vec::new();
    let mut out = Vec::new();
    for &i in &selected {
        for r in &phases[i].requires {
            let r = find(r)?;
            let mut needed = Vec::new();
            add_with_requirements(phases, r, &find, &mut needed, &mut vec![i])?;
            for n in needed {
                if !ran.contains(&n) {
                    ran.push(n);
                    out.push(Planned {
                        phase: n,
                        trials: 1,
                    });
                }
            }
        }
        ran.push(i);
        out.push(Planned {
            phase: i,
            trials: if prerequisites.contains(&i) {
                1
            } else {
                repeat
            },
        });
    }
    Ok(out)
}

/// The steps of the planned phases that inject a fault the backend cannot, as `file:line`
/// errors. Phase files are checked whole when loaded; a backend's faults are checked only for
/// the phases a run will execute, so a process-only phase never blocks a Docker run of others.
pub fn unsupported_faults(phases: &[Phase], plan: &[Planned], caps: &Capabilities) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for planned in plan {
        if !seen.insert(planned.phase) {
            continue;
        }
        let phase = &phases[planned.phase];
        for (i, step) in phase.steps.iter().enumerate() {
            for fault in step
                .faults_needed()
                .into_iter()
                .filter(|f| !caps.faults.contains(f))
            {
                out.push(format!(
                    "{}: step `{}`: the {} backend cannot {fault} a node",
                    phase.step_locations.get(i).map_or("?", String::as_str),
                    step.action(),
                    caps.backend
                ));
            }
        }
    }
    out
}

/// True when a phase the plan executes injects `fault`.
pub fn plan_uses(phases: &[Phase], plan: &[Planned], fault: Fault) -> bool {
    plan.iter().any(|p| {
        phases[p.phase]
            .steps
            .iter()
            .any(|s| s.faults_needed().contains(&fault))
    })
}

/// `i` after everything it requires, transitively, each once; a cycle is an error.
fn add_with_requirements(
    phases: &[Phase],
    i: usize,
    find: &dyn Fn(&str) -> Result<usize, String>,
    order: &mut Vec<usize>,
    stack: &mut Vec<usize>,
) -> Result<(), String> {
    if order.contains(&i) {
        return Ok(());
    }
    if stack.contains(&i) {
        return Err(format!("phase '{}' requires itself (cycle)", phases[i].id));
    }
    stack.push(i);
    for r in &phases[i].requires {
        add_with_requirements(phases, find(r)?, find, order, stack)?;
    }
    stack.pop();
    order.push(i);
    Ok(())
}

/// Validation of a `measure_gap` step against the marks recorded by earlier steps.
pub fn check_gap(
    g: &crate::step::MeasureGapArgs,
    marks: &std::collections::HashSet<String>,
) -> Result<(), String> {
    if !crate::step::is_name(&g.name) || !g.name.ends_with("_ms") {
        return Err(format!(
            "timing name '{}' must be a name ending in _ms",
            g.name
        ));
    }
    for mark in [&g.from, &g.to] {
        if !marks.contains(mark) {
            return Err(format!("mark '{mark}' is not recorded by an earlier step"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Capabilities {
        Capabilities {
            backend: "process",
            coordinators: 3,
            workers: 0,
            broker: false,
            faults: vec![Fault::Kill, Fault::Stop, Fault::Restart],
        }
    }

    fn parse_str(text: &str) -> Result<Phase, PhaseError> {
        parse(Path::new("phases/99-test.toml"), text, &caps())
    }

    const GOOD: &str = r#"
id = 5
name = "Coordinator Failover (Raft)"
requires = ["setup"]
detail = "old leader: node {old}, new leader: node {new}, election: {election_ms}"

[[step]]
do = "await_leader"
bind = "old"

[[step]]
do = "kill"
target = "@old"
mark = "killed"

[[step]]
do = "await_leader"
exclude = ["@old"]
bind = "new"
mark = "elected"

[[step]]
do = "measure"
name = "election_ms"
from = "killed"
to = "elected"
"#;

    #[test]
    fn a_good_phase_parses_with_step_locations() {
        let p = parse_str(GOOD).unwrap();
        assert_eq!(p.id, "5");
        assert_eq!(p.slug, "test");
        assert_eq!(p.steps.len(), 4);
        assert_eq!(p.step_locations[1], "phases/99-test.toml:11");
        assert!(matches!(&p.steps[1], Step::Kill(a) if a.target == Target::Bound("old".into())));
    }

    /// Each bad input class names the file, the exact line and what is wrong.
    #[test]
    fn bad_phase_files_name_file_line_and_cause() {
        let cases: &[(&str, &str, &str)] = &[
            // (replace, with, expected "line: message" fragment)
            (
                "mark = \"killed\"",
                "mark = \"killed\"\nsignal = 9",
                "15:1: unknown field `signal`",
            ),
            (
                "do = \"kill\"",
                "do = \"kil\"",
                "12:6: unknown variant `kil`",
            ),
            (
                "target = \"@old\"",
                "target = \"coordinator-4\"",
                "11:1: step `kill`: unknown target 'coordinator-4': the cluster has 3 coordinators",
            ),
            (
                "target = \"@old\"",
                "target = \"worker-1\"",
                "cluster has 0 workers",
            ),
            (
                "target = \"@old\"",
                "target = \"leadr\"",
                "13:10: unknown target 'leadr'",
            ),
            (
                "target = \"@old\"",
                "target = \"@nobody\"",
                "not bound by an earlier step (bound: old)",
            ),
            (
                "do = \"kill\"",
                "do = \"pause\"",
                "the process backend cannot pause a node",
            ),
            (
                "from = \"killed\"",
                "from = \"shot\"",
                "mark 'shot' is not recorded",
            ),
            (
                "election: {election_ms}",
                "election: {elect_ms}",
                "detail uses {elect_ms}",
            ),
            (
                "name = \"Coordinator",
                "nme = \"Coordinator",
                "3:1: unknown field `nme`",
            ),
            ("requires = [\"setup\"]", "requires = [\"setup\"", "TOML"),
        ];
        for (from, to, expected) in cases {
            assert!(GOOD.contains(from), "test case does not apply: {from}");
            let text = GOOD.replacen(from, to, 1);
            let err = parse_str(&text).expect_err(expected).to_string();
            assert!(err.starts_with("phases/99-test.toml:"), "{err}");
            if *expected != "TOML" {
                assert!(err.contains(expected), "expected '{expected}' in: {err}");
            }
        }
    }

    #[test]
    fn a_nemesis_is_checked_for_every_fault_it_draws_and_its_ranges() {
        let all = Capabilities {
            workers: 4,
            broker: true,
            faults: Fault::ALL.to_vec(),
            ..caps()
        };
        let text = |extra: &str| {
            format!("name = \"x\"\n\n[[step]]\ndo = \"nemesis\"\nduration_ms = 1000\nfault_ms = [10, 20]\ngap_ms = [10, 20]\n{extra}")
        };
        let path = Path::new("phases/soak.toml");
        assert!(parse(path, &text(""), &all).is_ok());
        let err = parse(
            path,
            &text(""),
            &Capabilities {
                faults: vec![Fault::Kill, Fault::Stop, Fault::Pause, Fault::Restart],
                ..all.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "phases/soak.toml:3:1: step `nemesis`: the process backend cannot partition a node"
        );
        // Narrowed to kinds the backend has: accepted.
        let narrowed = text("faults = [\"kill\", \"pause\"]");
        assert!(parse(
            path,
            &narrowed,
            &Capabilities {
                faults: vec![Fault::Kill, Fault::Pause],
                ..all.clone()
            }
        )
        .is_ok());
        let err = parse(path, &text("max_concurrent = 0"), &all)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_concurrent must be at least 1"), "{err}");
        let bad_range = "name = \"x\"\n\n[[step]]\ndo = \"nemesis\"\nduration_ms = 1000\nfault_ms = [20, 10]\ngap_ms = [10, 20]\n";
        let err = parse(path, bad_range, &all).unwrap_err().to_string();
        assert!(err.contains("fault_ms = [20, 10]"), "{err}");
    }

    #[test]
    fn a_step_must_start_with_do() {
        let text = "name = \"x\"\n\n[[step]]\ntarget = \"leader\"\ndo = \"kill\"\n";
        let err = parse_str(text).unwrap_err().to_string();
        assert!(err.contains(":3:1: a step must start with `do"), "{err}");
    }

    fn phase(id: &str, number: Option<u32>, requires: &[&str]) -> Phase {
        Phase {
            id: id.into(),
            number,
            slug: format!("slug-{id}"),
            name: id.into(),
            description: String::new(),
            requires: requires.iter().map(|s| s.to_string()).collect(),
            detail: String::new(),
            steps: vec![],
            step_locations: vec![],
            path: PathBuf::from(format!("{id}.toml")),
        }
    }

    #[test]
    fn plans_run_prerequisites_once_and_repeat_the_rest() {
        let phases = vec![
            phase("0", Some(0), &[]),
            phase("5", Some(5), &["0"]),
            phase("3", Some(3), &["0"]),
            phase("restart", None, &["slug-0"]),
        ];
        assert_eq!(
            plan(&phases, "5", 20).unwrap(),
            vec![
                Planned {
                    phase: 0,
                    trials: 1
                },
                Planned {
                    phase: 1,
                    trials: 20
                }
            ]
        );
        assert_eq!(
            plan(&phases, "all", 2).unwrap(),
            vec![
                Planned {
                    phase: 0,
                    trials: 1
                },
                Planned {
                    phase: 2,
                    trials: 2
                },
                Planned {
                    phase: 1,
                    trials: 2
                },
            ]
        );
        assert_eq!(plan(&phases, "slug-restart", 1).unwrap().len(), 2);
        assert_eq!(plan(&phases, "all,restart", 1).unwrap().len(), 4);
        // As given, as often as given; a prerequisite named again runs again.
        let order = |sel: &str| -> Vec<(usize, u32)> {
            plan(&phases, sel, 3)
                .unwrap()
                .iter()
                .map(|p| (p.phase, p.trials))
                .collect()
        };
        assert_eq!(order("3,3,3"), [(0, 1), (2, 3), (2, 3), (2, 3)]);
        assert_eq!(order("5,0"), [(0, 1), (1, 3), (0, 1)]);
        assert_eq!(order("5,3"), [(0, 1), (1, 3), (2, 3)]);
        let err = plan(&phases, "9", 1).unwrap_err();
        assert!(
            err.contains("unknown phase '9'; known: all, 0 (slug-0)"),
            "{err}"
        );
    }

    #[test]
    fn a_fault_the_backend_lacks_is_refused_only_in_planned_phases() {
        let mut wiped = phase("wiped", None, &["0"]);
        wiped.steps = vec![Step::Wipe(crate::step::FaultArgs {
            target: crate::step::Target::Coordinator(2),
            bind: None,
            mark: None,
        })];
        wiped.step_locations = vec!["wiped.toml:3".into()];
        let phases = vec![phase("0", Some(0), &[]), phase("5", Some(5), &["0"]), wiped];
        let docker = Capabilities {
            backend: "docker",
            faults: vec![Fault::Kill, Fault::Pause],
            ..caps()
        };
        let all = plan(&phases, "all", 1).unwrap();
        assert!(unsupported_faults(&phases, &all, &docker).is_empty());
        let with_wipe = plan(&phases, "wiped", 1).unwrap();
        assert_eq!(
            unsupported_faults(&phases, &with_wipe, &docker),
            ["wiped.toml:3: step `wipe`: the docker backend cannot wipe a node"]
        );
    }
}
