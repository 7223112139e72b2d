//! `grist plan --emit k8s`: one Kubernetes Indexed Job per phase. Each pod runs one task of the
//! phase: `grist run FILE --phase P --tasks N`, its task index taken from the
//! `JOB_COMPLETION_INDEX` Kubernetes sets in every pod of an Indexed Job. The image and the
//! volume holding the pipeline, its inputs and its workdir are placeholders to fill in.

use std::fmt::Write;
use std::path::Path;

use super::plan::{Pipeline, Plan};

/// The placeholders a user replaces before `kubectl apply`.
pub const IMAGE_PLACEHOLDER: &str = "GRIST_IMAGE";
pub const CLAIM_PLACEHOLDER: &str = "grist-data";

/// Longest Job name: an Indexed Job's pods are named `<job>-<index>-<suffix>` and their
/// hostname `<job>-<index>` must fit a 63-character label.
const MAX_JOB_NAME: usize = 52;

/// A Job name from `s`: a DNS label, cut to [`MAX_JOB_NAME`] with a hash of the whole name
/// when too long, so two long names never meet.
pub fn job_name(s: &str) -> String {
    let label = dns_label(s);
    if label.len() <= MAX_JOB_NAME {
        return label;
    }
    let hash = format!("{:08x}", xxhash_rust::xxh3::xxh3_64(s.as_bytes()) as u32);
    let head = label[..MAX_JOB_NAME - 9].trim_end_matches('-');
    format!("{head}-{hash}")
}

/// A DNS-1123 label from `s`: lowercase letters, digits and `-`, at most 63 characters,
/// starting and ending with an alphanumeric.
pub fn dns_label(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches('-');
    let mut out: String = out.chars().take(63).collect();
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() { "grist".into() } else { out }
}

/// A YAML scalar: JSON's double-quoted strings are valid YAML and escape everything.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The manifests of every phase, as one multi-document YAML stream, in the order to apply them.
pub fn manifests(
    p: &Pipeline,
    plan: &Plan,
    pipeline_file: &Path,
    parallelism: Option<usize>,
    cpus: usize,
) -> String {
    let mut out = String::new();
    let file = pipeline_file.display().to_string();
    let _ = writeln!(
        out,
        "# grist plan --emit k8s: one Indexed Job per phase of `{}`, in order. Replace {IMAGE_PLACEHOLDER}\n\
         # (an image with grist on its PATH) and, if yours is named otherwise, the claim {CLAIM_PLACEHOLDER}\n\
         # (a PersistentVolumeClaim holding the directory grist plan ran in: the pipeline file, its\n\
         # inputs and its workdir, mounted at /work), then apply each Job after the one before it\n\
         # completes (Indexed Jobs with backoffLimitPerIndex: Kubernetes 1.29 or later):\n\
         #   kubectl apply -f job.yaml && kubectl wait --for=condition=complete --timeout=24h job/NAME\n\
         # Paths (the pipeline file, and the paths in it) must be relative to /work. Each index is\n\
         # retried 3 times; a Job that still fails is Failed: `kubectl delete job/NAME` and apply it\n\
         # again, and its complete tasks are skipped.",
        p.spec.name
    );
    for phase in &plan.phases {
        let n = phase.tasks.len().max(1);
        let par = parallelism.unwrap_or(n).clamp(1, n);
        let name = job_name(&format!("grist-{}-{}", p.spec.name, phase.name));
        let command = [
            "grist",
            "run",
            &file,
            "--phase",
            &phase.name,
            "--tasks",
            &n.to_string(),
            "--workers",
            &cpus.to_string(),
        ]
        .iter()
        .map(|s| q(s))
        .collect::<Vec<_>>()
        .join(", ");
        let _ = write!(
            out,
            "---\n\
             # phase `{phase}`: {n} task(s), pod i runs task i\n\
             apiVersion: batch/v1\n\
             kind: Job\n\
             metadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/name: grist\n    grist/pipeline: {pl}\n    grist/phase: {ph}\n\
             spec:\n  completionMode: Indexed\n  completions: {n}\n  parallelism: {par}\n  backoffLimitPerIndex: 3\n  maxFailedIndexes: 0\n\
             \x20 template:\n    metadata:\n      labels:\n        app.kubernetes.io/name: grist\n        grist/phase: {ph}\n\
             \x20   spec:\n      restartPolicy: Never\n      containers:\n        - name: grist\n          image: {image}\n\
             \x20         workingDir: /work\n          command: [{command}]\n\
             \x20         resources:\n            requests:\n              cpu: {cpu}\n\
             \x20         volumeMounts:\n            - name: data\n              mountPath: /work\n\
             \x20     volumes:\n        - name: data\n          persistentVolumeClaim:\n            claimName: {claim}\n",
            phase = phase.name,
            name = q(&name),
            pl = q(&dns_label(&p.spec.name)),
            ph = q(&dns_label(&phase.name)),
            image = q(IMAGE_PLACEHOLDER),
            cpu = q(&cpus.to_string()),
            claim = q(CLAIM_PLACEHOLDER),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dns_label;

    #[test]
    fn long_job_names_are_cut_with_a_hash() {
        let a = super::job_name(&format!("grist-{}-stream", "x".repeat(60)));
        let b = super::job_name(&format!("grist-{}-stream2", "x".repeat(60)));
        assert!(a.len() <= 52 && b.len() <= 52, "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(
            super::job_name("grist-fineweb-en-stream"),
            "grist-fineweb-en-stream"
        );
    }

    #[test]
    fn job_names_are_dns_labels() {
        assert_eq!(
            dns_label("grist-FineWeb_en-dedup.signatures"),
            "grist-fineweb-en-dedup-signatures"
        );
        assert_eq!(dns_label("--a..b--"), "a-b");
        assert_eq!(dns_label(&"x".repeat(80)).len(), 63);
        assert_eq!(dns_label("é"), "grist");
    }
}
