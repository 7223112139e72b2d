//! The local executor: runs the selected tasks of each phase on a worker pool, then merges the
//! stats of every completed task into `workdir/stats/<stage>.json`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::plan::{Phase, Pipeline, Plan};
use super::runlog::{self, RunRecord};
use super::stats::{SourceCounts, StageReport, StageStats, task_sources};
use super::task::{self, Outcome};
use crate::error::{GristError, IoContext, Result};
use crate::io::atomic;
use crate::util::hook::checkpoint;

/// Which part of the plan this process runs.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub phase: Option<String>,
    /// `(i, n)`: run the tasks whose index is `i` modulo `n`.
    pub shard: Option<(usize, usize)>,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub selection: Selection,
    pub workers: usize,
    pub progress: bool,
}

#[derive(Debug, Default)]
pub struct RunSummary {
    pub tasks_run: usize,
    pub tasks_skipped: usize,
    pub seconds: f64,
    /// Merged stats of every stage, over all completed tasks of the plan.
    pub stages: Vec<StageReport>,
    /// Every task of the plan is complete (this run or earlier ones).
    pub complete: bool,
}

pub fn run(p: &Pipeline, plan: &Plan, opts: &RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let phases = select_phases(plan, &opts.selection)?;
    // A whole run owns the workdir; processes running one phase or some of its tasks (a
    // scheduler's array tasks, which may omit --phase when there is one) share it with each
    // other, not with a whole run.
    let whole = opts.selection.phase.is_none() && opts.selection.shard.is_none();
    let _lock = super::lock::WorkdirLock::acquire(p.workdir(), whole)?;
    if opts.selection.phase.is_some() {
        check_prerequisites(p, plan, phases[0])?;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.workers.max(1))
        .build()
        .map_err(|e| GristError::Usage(format!("cannot start {} workers: {e}", opts.workers)))?;
    for path in task::stale_outputs(p, plan) {
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(
                "removed {}: no task of the pipeline writes it any more (its input shard is gone)",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(GristError::io(&path, e)),
        }
    }
    let mut summary = RunSummary::default();
    let mut record = RunRecord::start(p, plan, describe_selection(&opts.selection));
    save_record(p, plan, &mut record)?;
    for phase in phases {
        let phase_started = Instant::now();
        let tasks: Vec<_> = phase
            .tasks
            .iter()
            .filter(|t| opts.selection.shard.is_none_or(|(i, n)| t.index % n == i))
            .collect();
        tracing::info!(
            "phase `{}`: {} of {} task(s)",
            phase.name,
            tasks.len(),
            phase.tasks.len()
        );
        let bar = progress_bar(opts.progress, &phase.name, tasks.len());
        let failures = Mutex::new(Vec::new());
        let counts = Mutex::new((0usize, 0usize));
        let rows_at_start = task::rows_streamed();
        let phase_done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            // Rows read by this phase's stream tasks so far, batch by batch, on the bar's message;
            // a phase of one long task still shows its pace.
            if !bar.is_hidden() {
                scope.spawn(|| {
                    while !phase_done.load(Ordering::Relaxed) {
                        let rows = task::rows_streamed() - rows_at_start;
                        let secs = phase_started.elapsed().as_secs_f64().max(1e-3);
                        if rows > 0 {
                            bar.set_message(format!(
                                "{rows} rows, {:.0} rows/s",
                                rows as f64 / secs
                            ));
                        }
                        std::thread::sleep(std::time::Duration::from_millis(250));
                    }
                });
            }
            // Stops the ticker however the phase ends, so the scope never waits on it forever.
            let _stop = SetOnDrop(&phase_done);
            pool.install(|| {
                tasks.par_iter().for_each(|t| {
                    match run_catching_panics(p, plan, &phase.name, t) {
                        Ok(Outcome::Skipped(_)) => {
                            counts.lock().expect("no panics hold this lock").1 += 1;
                            tracing::debug!("task {} already complete", t.name);
                        }
                        Ok(Outcome::Ran(m)) => {
                            counts.lock().expect("no panics hold this lock").0 += 1;
                            let first = t.counted.first().map(|&i| &p.nodes[i].id);
                            let rows = first
                                .and_then(|id| m.stats.get(id))
                                .map_or(0, |s| s.rows_in);
                            // On a terminal the bar says it; elsewhere one line per task.
                            if bar.is_hidden() {
                                tracing::info!("task {} done: {rows} rows in", t.name);
                            }
                        }
                        Err(e) => {
                            tracing::error!("task {} ({}) failed: {e}", t.name, t.input.display());
                            failures
                                .lock()
                                .expect("no panics hold this lock")
                                .push(format!("  {} ({}): {e}", t.name, t.input.display()));
                        }
                    }
                    bar.inc(1);
                })
            });
        });
        bar.finish_and_clear();
        let (ran, skipped) = counts.into_inner().expect("no panics hold this lock");
        summary.tasks_run += ran;
        summary.tasks_skipped += skipped;
        summary.stages = merge_stats(p, plan)?;
        record.phase_ran(&phase.name, phase_started.elapsed().as_secs_f64());
        save_record(p, plan, &mut record)?;
        let failures = failures.into_inner().expect("no panics hold this lock");
        if !failures.is_empty() {
            return Err(GristError::TasksFailed {
                phase: phase.name.clone(),
                failed: failures.len(),
                total: tasks.len(),
                details: failures.join("\n"),
            });
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    record.finished = Some(runlog::now());
    save_record(p, plan, &mut record)?;
    summary.complete = record.complete();
    Ok(summary)
}

fn describe_selection(sel: &Selection) -> String {
    match (&sel.phase, sel.shard) {
        (None, None) => "all phases".into(),
        (Some(ph), None) => format!("phase {ph}"),
        (None, Some((i, n))) => format!("tasks {i} mod {n}"),
        (Some(ph), Some((i, n))) => format!("phase {ph}, tasks {i} mod {n}"),
    }
}

struct SetOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs one task; a panic inside it (a bug) fails that task with the panic's message instead of
/// unwinding through the pool and ending the run, so the other tasks finish and the failure is
/// listed like any other.
fn run_catching_panics(
    p: &Pipeline,
    plan: &Plan,
    phase: &str,
    t: &super::plan::Task,
) -> Result<Outcome> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        task::run(p, plan, phase, t)
    }))
    .unwrap_or_else(|payload| {
        Err(GristError::Internal(format!(
            "task `{}` panicked: {}",
            t.name,
            crate::error::panic_message(payload.as_ref())
        )))
    })
}

/// A phase run on its own needs the phases it reads from to be complete: say which to run first
/// instead of failing on the files they would have written.
fn check_prerequisites(p: &Pipeline, plan: &Plan, phase: &Phase) -> Result<()> {
    let index = plan
        .phases
        .iter()
        .position(|ph| ph.name == phase.name)
        .expect("a phase of the plan");
    for k in super::plan::prerequisites(p, plan, index) {
        let before = &plan.phases[k];
        let missing = before
            .tasks
            .iter()
            .filter(|t| task::completed(p.workdir(), &before.name, t).is_none())
            .count();
        if missing > 0 {
            return Err(GristError::Usage(format!(
                "phase `{}` reads what phase `{}` writes, and {missing} of its {} task(s) are not \
                 complete: run `--phase {}` first (or the whole pipeline without --phase)",
                phase.name,
                before.name,
                before.tasks.len(),
                before.name
            )));
        }
    }
    Ok(())
}

fn select_phases<'a>(plan: &'a Plan, sel: &Selection) -> Result<Vec<&'a Phase>> {
    if let Some((i, n)) = sel.shard
        && (n == 0 || i >= n)
    {
        return Err(GristError::Usage(format!(
            "--task {i} is not in 0..{n} (--tasks {n})"
        )));
    }
    match &sel.phase {
        None if sel.shard.is_some() && plan.phases.len() > 1 => Err(GristError::Usage(
            "--task needs --phase when the pipeline has several phases (see `grist plan`)".into(),
        )),
        None => Ok(plan.phases.iter().collect()),
        Some(name) => match plan.phases.iter().find(|ph| &ph.name == name) {
            Some(ph) => Ok(vec![ph]),
            None => {
                let names: Vec<&str> = plan.phases.iter().map(|ph| ph.name.as_str()).collect();
                Err(GristError::Usage(format!(
                    "no phase `{name}`; phases: {}",
                    names.join(", ")
                )))
            }
        },
    }
}

fn progress_bar(enabled: bool, phase: &str, len: usize) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} tasks, {msg} {elapsed_precise} (eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(phase.to_string());
    bar
}

/// Sums the markers of every completed task into one stats file per stage. Runs under a lock on
/// `stats/.lock`, so concurrent `--task` processes leave the stats of the last one to finish,
/// which has seen every marker.
pub fn merge_stats(p: &Pipeline, plan: &Plan) -> Result<Vec<StageReport>> {
    let dir = p.workdir().join("stats");
    let lock = stats_lock(p.workdir())?;
    checkpoint("stats");
    type Merged = (StageStats, usize, usize, BTreeMap<String, SourceCounts>);
    let mut merged: BTreeMap<&str, Merged> = BTreeMap::new();
    let sources = task_sources(p, plan);
    for phase in &plan.phases {
        for t in &phase.tasks {
            let done = task::completed(p.workdir(), &phase.name, t);
            for &i in &t.counted {
                let entry = merged.entry(&p.nodes[i].id).or_default();
                entry.2 += 1;
                if let Some(marker) = &done
                    && let Some(s) = marker.stats.get(&p.nodes[i].id)
                {
                    entry.0.merge(s);
                    entry.1 += 1;
                    if let Some(source) = sources.get(&t.name) {
                        entry.3.entry(source.clone()).or_default().add(s);
                    }
                }
            }
        }
    }
    let mut reports = Vec::new();
    for &i in &p.order {
        let node = &p.nodes[i];
        let (stats, done, total, sources) = merged.remove(node.id.as_str()).unwrap_or_default();
        let report = StageReport {
            stage: node.id.clone(),
            type_name: node.type_name.to_string(),
            tasks_done: done,
            tasks_total: total,
            stats,
            sources,
        };
        write_report(&dir, &report)?;
        reports.push(report);
    }
    drop(lock);
    Ok(reports)
}

/// `stats/.lock`, held while stats files or `run.json` are written: processes running tasks of
/// one pipeline side by side take turns, and each writes what it counts from the markers then.
fn stats_lock(workdir: &Path) -> Result<std::fs::File> {
    let dir = workdir.join("stats");
    std::fs::create_dir_all(&dir).at(&dir)?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .at(&lock_path)?;
    lock.lock().at(&lock_path)?;
    Ok(lock)
}

/// Counts the complete tasks and writes `run.json`, under the stats lock, so that a process
/// finishing later never overwrites a newer count with an older one.
fn save_record(p: &Pipeline, plan: &Plan, record: &mut RunRecord) -> Result<()> {
    let _lock = stats_lock(p.workdir())?;
    record.count_done(p, plan);
    record.write(p.workdir())
}

fn write_report(dir: &Path, report: &StageReport) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(report).expect("reports serialize");
    json.push(b'\n');
    atomic::write(&dir.join(format!("{}.json", report.stage)), &json)
}
