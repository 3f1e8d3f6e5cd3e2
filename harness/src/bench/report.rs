//! `throughput.md`, `throughput.csv` (one row per step) and `throughput-cpu.csv` (the `/proc`
//! series): pure functions of [`Throughput`].

use std::fmt::Write as _;
use std::path::Path;

use super::drive::{Purpose, Route, StepRecord};
use super::procfs::{usage, HARNESS, MACHINE};
use super::Throughput;

/// The plot's file stem under the run dir's `plots/`.
pub const PLOT_STEM: &str = "throughput";

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

fn rate(v: Option<u32>) -> String {
    v.map_or("none".into(), |v| format!("{v}"))
}

impl Throughput {
    /// The whole report, a markdown document (its plot linked from `plots/`).
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let _ = writeln!(s, "# Throughput: run {}\n", self.run_id);
        let _ = writeln!(
            s,
            "Started {}, {} backend, {} coordinators, {} workers, {} pipelines ({} workers host \
             one); {} CPU cores, 1-min load average {} at the start and {} at the end \
             (/proc/loadavg: other work on the machine shares these cores).\n\nReproduce: `{}`\n",
            self.started_at,
            c.backend,
            c.coordinators,
            c.workers,
            c.pipelines,
            c.hosting_workers(),
            c.cores,
            c.loadavg_start.map_or("?".into(), |l| format!("{l:.2}")),
            c.loadavg_end.map_or("?".into(), |l| format!("{l:.2}")),
            self.command
        );
        self.ceilings_md(&mut s);
        self.method_md(&mut s);
        for route in [Route::Broker, Route::Pipelines] {
            self.steps_md(&mut s, route);
        }
        self.usage_md(&mut s);
        let _ = writeln!(
            s,
            "## Plot\n\nDelivered against offered rate for both paths (top), p50 and p99 \
             latency per step (bottom). [svg](plots/{PLOT_STEM}.svg)\n\n\
             ![throughput](plots/{PLOT_STEM}.png)\n"
        );
        s
    }

    fn ceilings_md(&self, s: &mut String) {
        let c = &self.config;
        let _ = writeln!(s, "## Ceilings\n");
        let _ = writeln!(
            s,
            "| path | sustained (input events/s) | first failed | per pipeline | per worker | p50 / p99 at 50 % (ms) | p50 / p99 at 90 % (ms) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for ceiling in [self.broker, self.pipelines] {
            let at = |purpose| {
                self.steps_of(ceiling.route, purpose).next().map_or(
                    "–".into(),
                    |st: &StepRecord| {
                        let verdict = if st.verdict.sustained() {
                            String::new()
                        } else {
                            format!(" ({})", st.verdict.describe())
                        };
                        format!(
                            "{} / {} at {}/s{verdict}",
                            ms(st.p50_ms),
                            ms(st.p99_ms),
                            st.target_per_s
                        )
                    },
                )
            };
            let (per_pipeline, per_worker) = match (ceiling.route, ceiling.sustained_per_s) {
                (Route::Pipelines, Some(r)) => (
                    format!("{:.0}", f64::from(r) / f64::from(c.pipelines.max(1))),
                    format!("{:.0}", f64::from(r) / c.hosting_workers().max(1) as f64),
                ),
                _ => ("–".into(), "–".into()),
            };
            let failed = match ceiling.failed_per_s {
                Some(f) => f.to_string(),
                None => format!("none up to --max-rate {} (a lower bound)", c.max_per_s),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {failed} | {per_pipeline} | {per_worker} | {} | {} |",
                ceiling.route.name(),
                rate(ceiling.sustained_per_s),
                at(Purpose::Half),
                at(Purpose::NinetyPct),
            );
        }
        let _ = writeln!(
            s,
            "\n**Ratio pipeline / broker: {}** (the pipelines' sustained input rate over the \
             broker's sustained rate, same run; the issue's target is ≥ 0.50). Each input through \
             the pipelines costs the broker more than a raw event: the input is routed to the \
             pipeline's session, acked by it, and every second input's output is routed again to \
             the collector.\n",
            self.ratio().map_or("n/a".into(), |r| format!("{r:.2}"))
        );
    }

    fn method_md(&self, s: &mut String) {
        let st = &self.config.settings;
        let _ = writeln!(
            s,
            "## How it was measured\n\n\
             - **Offered**: the harness publisher (one MQTT connection, QoS 1, at most 100 \
             unacked publishes, rumqttc) paces the target rate for {} ms (events handed out per \
             ms tick above 1000/s); offered = events handed to the client / the paced run's \
             duration (monotonic clock). Payloads are the suite's SensorReading events; the \
             broker path publishes them on `bench/raw/1..P` (split as the pipelines' inputs \
             are), topics no pipeline reads, the pipeline path on the pipelines' input topics.\n\
             - **Delivered**: the collectors (persistent QoS-1 subscriptions: one per raw topic \
             on the broker path, as each input topic has its pipeline; one on `e2e/output` on \
             the pipeline path) record every arrival; an event is delivered in time when its first well-formed copy arrived by \
             the step's end + {} ms (the latency bound). Broker path: every acked event must \
             come back; pipeline path: the acked events passing the filter (even seqs, half).\n\
             - **Latency**: the collector's arrival time − the send stamp the publisher put in \
             the payload (same process, same clock), every delivered event of the step \
             (including those of the tail wait, at most {} ms after the step), nearest rank.\n\
             - **Verdict** per step: *offer short* when offered < 95 % of target; *behind* when \
             delivered in time < 95 % of expected; *p99 over bound* when p99 > {} ms; else \
             *sustained*. The ramp doubles from {}/s until a step fails (or {}/s is sustained), \
             then bisects {} times between the highest sustained and the lowest failed rate; \
             the ceiling is the highest sustained target. Then one step each at 50 % and 90 % \
             of the ceiling.\n\
             - **CPU and RSS**: `utime + stime` of `/proc/<pid>/stat` (all threads) of each node \
             process and of the harness, read at the step's start and end; share = Δticks / \
             (Δ machine ticks of /proc/stat's `cpu` line / cores): 100 % is one core busy the \
             whole step. RSS: `VmRSS` of `/proc/<pid>/status` at the step's end. `machine` is \
             the whole machine's busy share of all its cores, other processes included.\n",
            st.step_ms,
            st.latency_bound_ms,
            st.tail_ms,
            st.latency_bound_ms,
            self.config.start_per_s,
            self.config.max_per_s,
            self.config.bisections,
        );
    }

    fn steps_md(&self, s: &mut String, route: Route) {
        let _ = writeln!(s, "## Steps: {}\n", route.name());
        let _ = writeln!(
            s,
            "| step | target/s | offered/s | expected | delivered in time | delivered/s | p50 ms | p99 ms | max ms | verdict | harness CPU % | broker CPU % | workers CPU % | coordinators CPU % | machine busy % |"
        );
        let _ = writeln!(
            s,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for st in self.steps.iter().filter(|st| st.route == route) {
            let purpose = match st.purpose {
                Purpose::Ramp => "ramp",
                Purpose::Half => "50 %",
                Purpose::NinetyPct => "90 %",
            };
            let _ = writeln!(
                s,
                "| {purpose} | {} | {:.0} | {} | {} ({:.1} %) | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                st.target_per_s,
                st.offered_per_s,
                st.expected,
                st.delivered_in_time,
                100.0 * st.delivered_share(),
                st.delivered_per_s,
                ms(st.p50_ms),
                ms(st.p99_ms),
                ms(st.max_ms),
                st.verdict.describe(),
                cpu(st, |n| n == HARNESS),
                cpu(st, |n| n == "broker"),
                cpu(st, |n| n.starts_with("worker-")),
                cpu(st, |n| n.starts_with("coordinator-")),
                cpu(st, |n| n == MACHINE),
            );
        }
        let _ = writeln!(s);
    }

    fn usage_md(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "## CPU and RSS per process at each path's ceiling step\n"
        );
        let _ = writeln!(
            s,
            "The ramp's highest sustained step and its first failed step above it (CPU % of one \
             core over the step; RSS at its end, MiB). The harness's share says whether the \
             harness, not the cluster, limited the rate.\n"
        );
        let picked: Vec<&StepRecord> = [self.broker, self.pipelines]
            .iter()
            .flat_map(|c| {
                let ramp = || self.steps_of(c.route, Purpose::Ramp);
                let ok = ramp().find(|s| Some(s.target_per_s) == c.sustained_per_s);
                let failed = ramp().find(|s| Some(s.target_per_s) == c.failed_per_s);
                ok.into_iter().chain(failed)
            })
            .collect();
        if picked.is_empty() {
            let _ = writeln!(s, "No step.\n");
            return;
        }
        let mut names: Vec<String> = Vec::new();
        for st in &picked {
            for u in &st.usage {
                if !names.contains(&u.name) {
                    names.push(u.name.clone());
                }
            }
        }
        let _ = write!(s, "| process |");
        for st in &picked {
            let _ = write!(
                s,
                " {} {}/s ({}) |",
                st.route.name(),
                st.target_per_s,
                st.verdict.describe()
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "|---|{}", "---|".repeat(picked.len()));
        for name in &names {
            let _ = write!(s, "| {name} |");
            for st in &picked {
                match st.usage_of(name) {
                    Some(u) if u.name == MACHINE => {
                        let _ = write!(s, " {:.0} % of all cores |", u.cpu_pct);
                    }
                    Some(u) => {
                        let _ = write!(
                            s,
                            " {:.0} % CPU, {:.1} MiB |",
                            u.cpu_pct,
                            u.rss_kb as f64 / 1024.0
                        );
                    }
                    None => {
                        let _ = write!(s, " – |");
                    }
                }
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s);
    }

    /// `throughput.csv`: one row per step.
    pub fn write_steps_csv(&self, path: &Path) -> anyhow::Result<()> {
        let mut w = csv::Writer::from_path(path)?;
        w.write_record([
            "route",
            "purpose",
            "target_per_s",
            "elapsed_ms",
            "sent",
            "acked",
            "offered_per_s",
            "expected",
            "delivered_in_time",
            "delivered",
            "duplicated",
            "delivered_per_s",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "verdict",
            "harness_cpu_pct",
            "broker_cpu_pct",
            "workers_cpu_pct",
            "coordinators_cpu_pct",
            "machine_busy_pct",
        ])?;
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
        for st in &self.steps {
            w.write_record([
                st.route.name().to_string(),
                format!("{:?}", st.purpose).to_lowercase(),
                st.target_per_s.to_string(),
                format!("{:.1}", st.elapsed_ms),
                st.sent.to_string(),
                st.acked.to_string(),
                format!("{:.1}", st.offered_per_s),
                st.expected.to_string(),
                st.delivered_in_time.to_string(),
                st.delivered.to_string(),
                st.duplicated.to_string(),
                format!("{:.1}", st.delivered_per_s),
                opt(st.p50_ms),
                opt(st.p99_ms),
                opt(st.max_ms),
                st.verdict.describe().to_string(),
                cpu(st, |n| n == HARNESS),
                cpu(st, |n| n == "broker"),
                cpu(st, |n| n.starts_with("worker-")),
                cpu(st, |n| n.starts_with("coordinator-")),
                cpu(st, |n| n == MACHINE),
            ])?;
        }
        w.flush()?;
        Ok(())
    }

    /// `throughput-cpu.csv`: per process, the CPU share and RSS between consecutive snapshots.
    pub fn write_cpu_csv(&self, path: &Path) -> anyhow::Result<()> {
        let mut w = csv::Writer::from_path(path)?;
        w.write_record(["at_us", "interval_ms", "process", "cpu_pct", "rss_kb"])?;
        for pair in self.series.windows(2) {
            let interval_ms = pair[1].at_us.saturating_sub(pair[0].at_us) as f64 / 1000.0;
            if interval_ms < 100.0 {
                continue;
            }
            for u in usage(&pair[0], &pair[1]) {
                w.write_record([
                    pair[1].at_us.to_string(),
                    format!("{interval_ms:.0}"),
                    u.name,
                    format!("{:.1}", u.cpu_pct),
                    u.rss_kb.to_string(),
                ])?;
            }
        }
        w.flush()?;
        Ok(())
    }
}

/// The summed CPU share of the step's processes whose names `pick` selects, `–` if none.
fn cpu(st: &StepRecord, pick: impl Fn(&str) -> bool) -> String {
    let picked: Vec<f64> = st
        .usage
        .iter()
        .filter(|u| pick(&u.name))
        .map(|u| u.cpu_pct)
        .collect();
    if picked.is_empty() {
        "–".into()
    } else {
        format!("{:.0}", picked.iter().sum::<f64>())
    }
}
