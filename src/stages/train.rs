//! `train`: a pipeline that ends in a training run. The stage's parameters are a train config
//! (the same fields as `grist train CONFIG`); it runs after the stages that make its data, and
//! resumes from the run's checkpoints when killed.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use super::{
    Barrier, BarrierInput, BarrierOutcome, BarrierTask, BuildContext, ParamProblem, Stage,
    StageConfig, StageKind,
};
use crate::error::Result;
use crate::io::stats::StageStats;
use crate::train::TrainConfig;
use crate::train::trainer;

impl StageConfig for TrainConfig {
    const TYPE: &'static str = "train";
    const KIND: StageKind = StageKind::Barrier;
    const READS_ROWS: bool = false;

    fn check(&self) -> Vec<ParamProblem> {
        self.param_problems()
            .into_iter()
            .map(|(param, message)| ParamProblem { param, message })
            .collect()
    }

    fn uses_files(&self) -> Vec<PathBuf> {
        let mut files = vec![PathBuf::from(&self.data.path)];
        files.extend(self.data.replay.as_ref().map(|r| PathBuf::from(&r.path)));
        files.extend(self.init_from.as_ref().map(PathBuf::from));
        files.extend(self.tokenizer.as_ref().map(PathBuf::from));
        files
    }

    fn makes_files(&self) -> Vec<PathBuf> {
        vec![PathBuf::from(&self.output)]
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Stage> {
        Ok(Stage::Barrier(Arc::new(TrainBarrier {
            config: self.clone(),
        })))
    }
}

struct TrainBarrier {
    config: TrainConfig,
}

impl Barrier for TrainBarrier {
    fn phases(&self) -> Vec<&'static str> {
        vec!["train"]
    }

    fn task_count(&self, _phase: usize, _inputs: &[BarrierInput]) -> usize {
        1
    }

    fn output_schema(&self, _input: SchemaRef) -> Result<Option<SchemaRef>> {
        Ok(None)
    }

    fn run_task(&self, _task: &BarrierTask) -> Result<BarrierOutcome> {
        let summary = trainer::run(&self.config)?;
        let mut stats = StageStats::default();
        for key in [
            "steps",
            "tokens",
            "final_loss",
            "val_loss",
            "val_bpb",
            "unigram_bpb",
        ] {
            if let Some(v) = summary.json[key].as_f64() {
                stats.metrics.insert(key.into(), v);
            }
        }
        let out = PathBuf::from(&self.config.output);
        Ok(BarrierOutcome {
            outputs: vec![
                out.join("summary.json"),
                out.join("metrics.jsonl"),
                summary.checkpoint,
            ],
            stats,
        })
    }
}
