//! `grist plan --emit slurm`: one sbatch array script per phase, each task of the array running
//! `grist run FILE --phase P` with its `SLURM_ARRAY_TASK_ID` / `SLURM_ARRAY_TASK_COUNT`.

use std::fmt::Write;
use std::path::Path;

use super::plan::{Pipeline, Plan};

/// Scripts for every phase, separated by a comment line naming the file to save each one as.
pub fn scripts(
    p: &Pipeline,
    plan: &Plan,
    pipeline_file: &Path,
    array_size: Option<usize>,
    cpus: usize,
) -> String {
    let mut out = String::new();
    let file = pipeline_file.display();
    for (k, phase) in plan.phases.iter().enumerate() {
        let n = array_size
            .unwrap_or(phase.tasks.len())
            .clamp(1, phase.tasks.len().max(1));
        let job = format!("grist-{}-{}", p.spec.name, phase.name);
        let _ = writeln!(
            out,
            "# ---- {job}.sbatch ({} task(s) in {n} array job(s)) ----",
            phase.tasks.len()
        );
        let _ = writeln!(out, "#!/bin/bash");
        let _ = writeln!(out, "#SBATCH --job-name={job}");
        let _ = writeln!(out, "#SBATCH --array=0-{}", n - 1);
        let _ = writeln!(out, "#SBATCH --cpus-per-task={cpus}");
        let _ = writeln!(
            out,
            "#SBATCH --output={}/slurm/%x-%a.log",
            p.spec.workdir.display()
        );
        if k > 0 {
            let _ = writeln!(
                out,
                "# submit with: sbatch --dependency=afterok:<job id of the previous phase> {job}.sbatch"
            );
        }
        let _ = writeln!(
            out,
            "# The log directory must exist before submission: mkdir -p {}/slurm",
            p.spec.workdir.display()
        );
        let _ = writeln!(out, "set -euo pipefail");
        let _ = writeln!(
            out,
            "# Each array task runs the tasks whose index is SLURM_ARRAY_TASK_ID modulo SLURM_ARRAY_TASK_COUNT;\n# finished tasks are skipped, so a failed array task can simply be resubmitted."
        );
        let _ = writeln!(
            out,
            "grist run {file} --phase {} --workers \"$SLURM_CPUS_PER_TASK\"\n",
            phase.name
        );
    }
    out
}
