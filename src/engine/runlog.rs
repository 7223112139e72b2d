//! `workdir/run.json`: the facts of the last `grist run` of a pipeline, for a report: the
//! pipeline file as written, each stage's resolved configuration, grist's version, when the run
//! started and ended, the wall time of each phase it ran, and how many tasks of each phase are
//! complete. Rewritten after every phase, so a killed or failed run leaves what it finished.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::plan::{Pipeline, Plan};
use super::task;
use crate::error::{IoContext, Result};
use crate::io::atomic;

pub const RUN_FILE: &str = "run.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub grist_version: String,
    pub pipeline_file: PathBuf,
    /// The pipeline file's text when the run started.
    pub pipeline_text: String,
    pub name: String,
    /// The directory grist ran in: the pipeline's relative paths start there.
    pub cwd: PathBuf,
    /// Unix seconds.
    pub started: f64,
    /// `None` while running, or when the run stopped on an error or was killed.
    pub finished: Option<f64>,
    /// What the run was asked to do (`all phases`, `phase P, tasks I mod N`).
    pub selection: String,
    pub stages: Vec<StageRecord>,
    pub phases: Vec<PhaseRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub inputs: Vec<String>,
    /// The stage's parameters, defaults filled in.
    pub config: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub name: String,
    pub stages: Vec<String>,
    pub tasks_total: usize,
    /// Tasks with a valid completion marker (from this run or an earlier one).
    pub tasks_done: usize,
    /// Wall time this run spent in the phase; `None` if it did not run it.
    pub seconds: Option<f64>,
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl RunRecord {
    pub fn start(p: &Pipeline, plan: &Plan, selection: String) -> Self {
        let text = std::fs::read_to_string(&p.spec.file).unwrap_or_default();
        RunRecord {
            grist_version: env!("CARGO_PKG_VERSION").to_string(),
            pipeline_file: p.spec.file.clone(),
            pipeline_text: text,
            name: p.spec.name.clone(),
            cwd: std::env::current_dir().unwrap_or_default(),
            started: now(),
            finished: None,
            selection,
            stages: p
                .spec
                .stages
                .iter()
                .map(|s| StageRecord {
                    id: s.id.clone(),
                    type_name: s.type_name.to_string(),
                    inputs: s.inputs.clone(),
                    config: s.config.to_json(),
                })
                .collect(),
            phases: plan
                .phases
                .iter()
                .map(|ph| PhaseRecord {
                    name: ph.name.clone(),
                    stages: ph.stages.clone(),
                    tasks_total: ph.tasks.len(),
                    tasks_done: 0,
                    seconds: None,
                })
                .collect(),
        }
    }

    /// Counts the complete tasks of every phase from their markers.
    pub fn count_done(&mut self, p: &Pipeline, plan: &Plan) {
        for (record, phase) in self.phases.iter_mut().zip(&plan.phases) {
            record.tasks_done = phase
                .tasks
                .iter()
                .filter(|t| task::completed(p.workdir(), &phase.name, t).is_some())
                .count();
        }
    }

    pub fn phase_ran(&mut self, name: &str, seconds: f64) {
        if let Some(ph) = self.phases.iter_mut().find(|ph| ph.name == name) {
            *ph.seconds.get_or_insert(0.0) += seconds;
        }
    }

    /// Every task of every phase is complete.
    pub fn complete(&self) -> bool {
        self.phases.iter().all(|ph| ph.tasks_done == ph.tasks_total)
    }

    pub fn write(&self, workdir: &Path) -> Result<()> {
        std::fs::create_dir_all(workdir).at(workdir)?;
        let mut json = serde_json::to_vec_pretty(self).expect("run records serialize");
        json.push(b'\n');
        atomic::write(&workdir.join(RUN_FILE), &json)
    }

    pub fn read(workdir: &Path) -> Result<Option<Self>> {
        let path = workdir.join(RUN_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| crate::GristError::data(&path, format!("not a run record: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crate::GristError::io(&path, e)),
        }
    }
}
