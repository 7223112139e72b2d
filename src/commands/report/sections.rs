//! The report's sections, each from the loaded run data. Every figure carries `data-*`
//! attributes with its raw value, so tests (and scripts) can check the page against the stats.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::html::{bytes, esc, num, page, pct, seconds, short, time};
use super::svg::{self, Series};
use super::{RunData, Training};
use crate::engine::stats::StageReport;
use crate::io::stats::{CLUSTER_SAMPLES, KEPT_SAMPLES, Sample};

const SYNTH_TYPES: [&str; 2] = ["self_instruct", "evol_instruct"];
const DEDUP_TYPES: [&str; 2] = ["minhash_dedup", "exact_dedup"];

pub fn render(data: &RunData) -> String {
    let mut nav: Vec<(&str, &str)> = Vec::new();
    let mut body = String::new();
    let mut add = |id: &'static str, title: &'static str, html: String| {
        if !html.is_empty() {
            let _ = write!(
                body,
                "<section id=\"{id}\"><h2>{title}</h2>{html}</section>"
            );
            nav.push((id, title));
        }
    };
    add("run", "Run", run_facts(data));
    add("funnel", "Funnel", funnel(data));
    add("examples", "Reasons and examples", examples(data));
    add("distributions", "Distributions", distributions(data));
    add("dedup", "Deduplication", dedup(data));
    add("tokens", "Tokens", tokens(data));
    add("training", "Training", training(data));
    add("synthetic", "Synthetic data", synthetic(data));
    let name = data
        .record
        .as_ref()
        .map_or_else(|| data.workdir.display().to_string(), |r| r.name.clone());
    let subtitle = format!(
        "{} · grist {}",
        data.workdir.display(),
        data.record
            .as_ref()
            .map_or("(version unknown)", |r| r.grist_version.as_str())
    );
    page(&format!("grist report: {name}"), &subtitle, &nav, &body)
}

fn is_synth(s: &StageReport) -> bool {
    SYNTH_TYPES.contains(&s.type_name.as_str())
}

fn run_facts(data: &RunData) -> String {
    let mut out = String::new();
    let Some(r) = &data.record else {
        out.push_str(
            "<p class=\"warn\">No <code>run.json</code> in this workdir (a run by an older grist): \
             the pipeline, times and phases are unknown; the figures below come from the stats files.</p>",
        );
        return out;
    };
    let done: usize = r.phases.iter().map(|p| p.tasks_done).sum();
    let total: usize = r.phases.iter().map(|p| p.tasks_total).sum();
    let complete = r.complete();
    if !complete {
        let _ = write!(
            out,
            "<p class=\"warn\" id=\"partial\" data-tasks-done=\"{done}\" data-tasks-total=\"{total}\">\
             <b>Partial run</b>: {done} of {total} tasks are complete{}. Every figure below \
             covers the completed tasks only.</p>",
            if r.finished.is_none() {
                " and the last run did not finish (still running, killed, or failed)"
            } else {
                ""
            }
        );
    }
    let _ = write!(
        out,
        "<div class=\"scroll\"><table><tbody>\
         <tr><th>pipeline</th><td>{} (<code>{}</code>)</td></tr>\
         <tr><th>grist</th><td>{}</td></tr>\
         <tr><th>ran in</th><td><code>{}</code>: {}</td></tr>\
         <tr><th>started</th><td>{}</td></tr>\
         <tr><th>finished</th><td>{}</td></tr>\
         <tr><th>tasks</th><td data-tasks-done=\"{done}\" data-tasks-total=\"{total}\">{done} of {total} complete</td></tr>\
         </tbody></table></div>",
        esc(&r.name),
        esc(&r.pipeline_file.display().to_string()),
        esc(&r.grist_version),
        esc(&r.cwd.display().to_string()),
        esc(&r.selection),
        time(r.started),
        r.finished.map_or_else(
            || "not finished".into(),
            |f| format!("{} ({})", time(f), seconds(f - r.started))
        ),
    );
    out.push_str(
        "<h3>Phases</h3><div class=\"scroll\"><table><thead><tr><th>phase</th><th>stages</th>\
         <th class=\"n\">tasks done</th><th class=\"n\">wall time (this run)</th></tr></thead><tbody>",
    );
    for p in &r.phases {
        let _ = write!(
            out,
            "<tr data-phase=\"{}\"><td>{}</td><td>{}</td><td class=\"n\">{} / {}</td><td class=\"n\">{}</td></tr>",
            esc(&p.name),
            esc(&p.name),
            esc(&p.stages.join(", ")),
            p.tasks_done,
            p.tasks_total,
            p.seconds
                .map_or_else(|| "skipped (complete earlier)".into(), seconds),
        );
    }
    out.push_str("</tbody></table></div>");
    let _ = write!(
        out,
        "<details><summary>Pipeline file, as written</summary><pre class=\"pipeline\">{}</pre></details>",
        esc(&r.pipeline_text)
    );
    out
}

fn reasons_text(rejected: &BTreeMap<String, u64>) -> String {
    let mut items: Vec<_> = rejected.iter().filter(|(_, n)| **n > 0).collect();
    items.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    items
        .iter()
        .map(|(r, n)| {
            format!(
                "<span data-reason=\"{}\" data-count=\"{n}\">{} {}</span>",
                esc(r),
                esc(r),
                num(**n)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cells rows in, kept, dropped (share), dropped by reason, bytes in, bytes kept: the same
/// in the funnel and in each source's table.
fn count_cells(
    rows_in: u64,
    rows_kept: u64,
    rejected: &BTreeMap<String, u64>,
    bytes_in: u64,
    bytes_kept: u64,
) -> String {
    let dropped: u64 = rejected.values().sum();
    format!(
        "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} ({})</td><td>{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td>",
        num(rows_in),
        num(rows_kept),
        num(dropped),
        pct(dropped, rows_in),
        reasons_text(rejected),
        bytes(bytes_in),
        bytes(bytes_kept),
    )
}

fn balance_cell(rows_in: u64, kept: u64, rejected: u64) -> String {
    if rows_in == kept + rejected {
        "<td class=\"ok\" data-balanced=\"true\" title=\"rows in = kept + dropped\">✓ adds up</td>"
            .into()
    } else {
        format!(
            "<td class=\"bad\" data-balanced=\"false\">✗ off by {}</td>",
            rows_in as i64 - (kept + rejected) as i64
        )
    }
}

fn funnel(data: &RunData) -> String {
    if data.stages.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<p class=\"note\">Rows and text bytes through each stage, with every dropped row's \
         reason. Each row of the table checks the accounting identity rows in = rows kept + \
         rows dropped. A source's bytes in are its files' bytes (compressed, as stored); every \
         other figure counts the bytes of the <code>text</code> column.</p><div class=\"scroll\"><table id=\"funnel-table\"><thead><tr>\
         <th>stage</th><th>type</th><th class=\"n\">tasks</th><th class=\"n\">rows in</th>\
         <th class=\"n\">kept</th><th class=\"n\">dropped</th><th>dropped by reason</th>\
         <th class=\"n\">bytes in</th><th class=\"n\">bytes kept</th><th class=\"n\">tokens</th>\
         <th>accounting</th></tr></thead><tbody>",
    );
    let mut chart = Vec::new();
    for s in &data.stages {
        let st = &s.stats;
        let rejected = st.rows_rejected();
        let tokens = st.metrics.get("tokens").copied();
        let _ = write!(
            out,
            "<tr data-stage=\"{}\" data-rows-in=\"{}\" data-rows-kept=\"{}\" data-rows-rejected=\"{rejected}\" \
             data-bytes-in=\"{}\" data-bytes-kept=\"{}\"><td>{}</td><td>{}</td><td class=\"n\">{} / {}</td>\
             {}<td class=\"n\">{}</td>{}</tr>",
            esc(&s.stage),
            st.rows_in,
            st.rows_kept,
            st.bytes_in,
            st.bytes_kept,
            esc(&s.stage),
            esc(&s.type_name),
            s.tasks_done,
            s.tasks_total,
            count_cells(
                st.rows_in,
                st.rows_kept,
                &st.rejected,
                st.bytes_in,
                st.bytes_kept
            ),
            tokens.map_or_else(|| "–".into(), |t| num(t as u64)),
            balance_cell(st.rows_in, st.rows_kept, rejected),
        );
        if st.rows_in > 0 {
            chart.push((s.stage.clone(), st.rows_kept as f64));
        }
    }
    out.push_str("</tbody></table></div>");
    if !chart.is_empty() {
        let _ = write!(
            out,
            "<figure><figcaption>Rows kept after each stage</figcaption>{}</figure>",
            svg::bars(&chart, "rows kept after each stage", |v| num(v as u64))
        );
    }
    // Per source.
    let mut sources: Vec<&String> = data.stages.iter().flat_map(|s| s.sources.keys()).collect();
    sources.sort();
    sources.dedup();
    for source in sources {
        let _ = write!(
            out,
            "<h3 id=\"source-{}\">Source <code>{}</code></h3><div class=\"scroll\"><table data-source=\"{}\">\
             <thead><tr><th>stage</th><th class=\"n\">rows in</th><th class=\"n\">kept</th>\
             <th class=\"n\">dropped</th><th>dropped by reason</th><th class=\"n\">bytes in</th>\
             <th class=\"n\">bytes kept</th><th>accounting</th></tr></thead><tbody>",
            esc(source),
            esc(source),
            esc(source)
        );
        for s in &data.stages {
            let Some(c) = s.sources.get(source) else {
                continue;
            };
            let rejected: u64 = c.rejected.values().sum();
            let _ = write!(
                out,
                "<tr data-stage=\"{}\" data-rows-in=\"{}\" data-rows-kept=\"{}\" data-rows-rejected=\"{rejected}\">\
                 <td>{}</td>{}{}</tr>",
                esc(&s.stage),
                c.rows_in,
                c.rows_kept,
                esc(&s.stage),
                count_cells(
                    c.rows_in,
                    c.rows_kept,
                    &c.rejected,
                    c.bytes_in,
                    c.bytes_kept
                ),
                balance_cell(c.rows_in, c.rows_kept, rejected),
            );
        }
        out.push_str("</tbody></table></div>");
    }
    out
}

fn example(stage: &str, group: &str, s: &Sample) -> String {
    // Kept rows get a green edge: the `kept` sample, and kept members of a dedup cluster.
    let class = if group == KEPT_SAMPLES || s.note.ends_with(", kept") {
        "example kept"
    } else {
        "example"
    };
    format!(
        "<div class=\"{class}\" data-stage=\"{}\" data-group=\"{}\" data-id=\"{}\"><div class=\"meta\">\
         id <code>{}</code> · {} characters{}{}</div><pre>{}</pre></div>",
        esc(stage),
        esc(group),
        esc(&s.id),
        esc(&short(&s.id, 80)),
        num(s.chars),
        if s.note.is_empty() { "" } else { " · " },
        esc(&s.note),
        esc(&s.text),
    )
}

fn examples(data: &RunData) -> String {
    let mut out = String::new();
    for s in &data.stages {
        let st = &s.stats;
        // Every reason the stage counted, and every sampled group.
        let mut groups: Vec<&String> = st
            .samples
            .keys()
            .filter(|g| *g != CLUSTER_SAMPLES && *g != KEPT_SAMPLES)
            .chain(st.rejected.iter().filter(|(_, n)| **n > 0).map(|(r, _)| r))
            .collect();
        groups.sort();
        groups.dedup();
        if groups.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "<details open data-stage=\"{}\"><summary><b>{}</b> ({}): {} dropped of {}</summary>",
            esc(&s.stage),
            esc(&s.stage),
            esc(&s.type_name),
            num(st.rows_rejected()),
            num(st.rows_in)
        );
        let mut reasons: Vec<(&String, u64)> = groups
            .iter()
            .map(|g| (*g, st.rejected.get(*g).copied().unwrap_or(0)))
            .collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (reason, n) in reasons {
            let _ = write!(
                out,
                "<h3 data-reason=\"{}\">{} <span class=\"note\">{} rows</span></h3>",
                esc(reason),
                esc(reason),
                num(n)
            );
            match st.samples.get(reason.as_str()) {
                Some(samples) => {
                    out.push_str("<div class=\"examples\">");
                    for sample in samples {
                        out.push_str(&example(&s.stage, reason, sample));
                    }
                    out.push_str("</div>");
                }
                None => {
                    let _ = write!(
                        out,
                        "<p class=\"note\" data-no-examples=\"{}\">No examples: this stage drops \
                         these rows inside its own phase, where rows are counted but not sampled.</p>",
                        esc(reason)
                    );
                }
            }
        }
        if let Some(kept) = st.samples.get(KEPT_SAMPLES) {
            let _ = write!(
                out,
                "<h3>kept <span class=\"note\">{} rows</span></h3>",
                num(st.rows_kept)
            );
            out.push_str("<div class=\"examples\">");
            for sample in kept {
                out.push_str(&example(&s.stage, KEPT_SAMPLES, sample));
            }
            out.push_str("</div>");
        }
        out.push_str("</details>");
    }
    if !out.is_empty() {
        out.insert_str(
            0,
            "<p class=\"note\">For each stage that dropped rows, a few of them per reason and a few \
             it kept: the rows whose id hashes lowest, so the same rows are shown whatever the \
             order tasks ran in. The first 500 characters of each.</p>",
        );
    }
    out
}

fn histogram_figure(stage: &StageReport, name: &str) -> String {
    let h = &stage.stats.histograms[name];
    let mean = if h.count > 0 {
        h.sum / h.count as f64
    } else {
        f64::NAN
    };
    let outside = if h.under + h.over > 0 {
        format!("; {} below the range, {} above", num(h.under), num(h.over))
    } else {
        String::new()
    };
    format!(
        "<figure data-stage=\"{}\" data-histogram=\"{}\" data-count=\"{}\"><figcaption><b>{}</b> · {}: \
         {} values, mean {}{}</figcaption>{}</figure>",
        esc(&stage.stage),
        esc(name),
        h.count,
        esc(&stage.stage),
        esc(name),
        num(h.count),
        svg::short_num(mean),
        outside,
        svg::histogram(h, &format!("{} {}", stage.stage, name)),
    )
}

/// A stage's histograms in the order its rules run (then by name).
fn in_rule_order(s: &StageReport) -> Vec<&String> {
    let mut names: Vec<&String> = s.stats.histograms.keys().collect();
    names.sort_by_key(|n| (s.stats.histograms[*n].rank, n.as_str()));
    names
}

fn distributions(data: &RunData) -> String {
    let mut out = String::new();
    for s in data.stages.iter().filter(|s| !is_synth(s)) {
        let mut figs = String::new();
        if let Some(langs) = s.stats.counts.get("language") {
            let mut items: Vec<(String, f64)> =
                langs.iter().map(|(l, n)| (l.clone(), *n as f64)).collect();
            items.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if items.len() > 15 {
                let other: f64 = items[14..].iter().map(|i| i.1).sum();
                items.truncate(14);
                items.push((format!("{} others", langs.len() - 14), other));
            }
            let _ = write!(
                figs,
                "<figure data-stage=\"{}\" data-counts=\"language\"><figcaption><b>{}</b> · top language, \
                 by rows</figcaption>{}</figure>",
                esc(&s.stage),
                esc(&s.stage),
                svg::bars(&items, "languages", |v| num(v as u64))
            );
        }
        for name in in_rule_order(s) {
            figs.push_str(&histogram_figure(s, name));
        }
        if !figs.is_empty() {
            let _ = write!(
                out,
                "<h3>{} <span class=\"note\">({})</span></h3><div class=\"grid\">{figs}</div>",
                esc(&s.stage),
                esc(&s.type_name)
            );
        }
    }
    if !out.is_empty() {
        out.insert_str(
            0,
            "<p class=\"note\">Fixed-bin histograms recorded as the stages ran. A filter's figure \
             counts the documents that reached its rule (an earlier rule of the same stage may have \
             dropped a document first); the dashed line is the rule's threshold and the shaded side \
             is dropped. Lengths are measured after each source (what enters) and at each writer \
             (what is written).</p>",
        );
    }
    out
}

fn dedup(data: &RunData) -> String {
    let mut out = String::new();
    for s in data
        .stages
        .iter()
        .filter(|s| DEDUP_TYPES.contains(&s.type_name.as_str()))
    {
        let m = &s.stats.metrics;
        let _ = write!(
            out,
            "<h3>{} <span class=\"note\">({})</span></h3><div class=\"scroll\"><table data-stage=\"{}\"><tbody>",
            esc(&s.stage),
            esc(&s.type_name),
            esc(&s.stage)
        );
        for key in [
            "documents",
            "candidate_pairs",
            "clusters",
            "duplicates_removed",
            "duplicates",
        ] {
            if let Some(v) = m.get(key) {
                let _ = write!(
                    out,
                    "<tr data-metric=\"{key}\" data-value=\"{v}\"><th>{}</th><td class=\"n\">{}</td></tr>",
                    key.replace('_', " "),
                    num(*v as u64)
                );
            }
        }
        let _ = write!(
            out,
            "<tr><th>removed share</th><td class=\"n\">{}</td></tr></tbody></table></div>",
            pct(s.stats.rows_rejected(), s.stats.rows_in)
        );
        let mut sizes: Vec<(u64, String, f64)> = m
            .iter()
            .filter_map(|(k, v)| {
                let bin = k.strip_prefix("clusters_of_")?;
                let lo = bin.split('-').next()?.parse().ok()?;
                Some((lo, format!("{bin} documents"), *v))
            })
            .collect();
        sizes.sort_by_key(|x| x.0);
        if !sizes.is_empty() {
            let items: Vec<(String, f64)> = sizes.into_iter().map(|(_, l, v)| (l, v)).collect();
            let _ = write!(
                out,
                "<figure data-stage=\"{}\" data-clusters><figcaption>Clusters by size</figcaption>{}</figure>",
                esc(&s.stage),
                svg::bars(&items, "clusters by size", |v| num(v as u64))
            );
        }
        if !s.sources.is_empty() {
            out.push_str(
                "<table><thead><tr><th>source</th><th class=\"n\">rows in</th>\
                 <th class=\"n\">removed</th><th class=\"n\">removed share</th></tr></thead><tbody>",
            );
            for (source, c) in &s.sources {
                let removed: u64 = c.rejected.values().sum();
                let _ = write!(
                    out,
                    "<tr data-source=\"{}\" data-removed=\"{removed}\"><td>{}</td><td class=\"n\">{}</td>\
                     <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    esc(source),
                    esc(source),
                    num(c.rows_in),
                    num(removed),
                    pct(removed, c.rows_in)
                );
            }
            out.push_str("</tbody></table>");
        }
        if let Some(members) = s.stats.samples.get(CLUSTER_SAMPLES) {
            out.push_str(
                "<p class=\"note\">A few clusters (those whose ids hash lowest), each row with \
                 whether it was kept:</p>",
            );
            // Members come sorted by cluster; the sample may end inside a cluster.
            let mut groups: Vec<Vec<&Sample>> = Vec::new();
            for m in members {
                match groups.last_mut() {
                    Some(g) if g[0].key[0] == m.key[0] => g.push(m),
                    _ => groups.push(vec![m]),
                }
            }
            for (k, group) in groups.iter().enumerate() {
                // The note reads `cluster C of N documents, kept`: the summary names the cluster.
                let note = &group[0].note;
                let cluster = note.rsplit_once(", ").map_or(note.as_str(), |c| c.0);
                let size: Option<usize> = cluster
                    .split(" of ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next()?.parse().ok());
                let partial = match size {
                    Some(n) if n > group.len() => format!(" (showing {})", group.len()),
                    _ => String::new(),
                };
                let _ = write!(
                    out,
                    "<details{}><summary>{}{partial}</summary><div class=\"examples\">",
                    if k < 2 { " open" } else { "" },
                    esc(cluster)
                );
                for m in group {
                    out.push_str(&example(&s.stage, CLUSTER_SAMPLES, m));
                }
                out.push_str("</div></details>");
            }
        }
    }
    out
}

fn tokens(data: &RunData) -> String {
    let mut out = String::new();
    for (stage, path, vocab) in &data.tokenizers {
        let _ = write!(
            out,
            "<p data-tokenizer=\"{}\" data-vocab-size=\"{}\">Tokenizer <b>{}</b> (<code>{}</code>): \
             vocabulary of {} tokens.</p>",
            esc(stage),
            vocab.map_or(0, |v| v),
            esc(stage),
            esc(&path.display().to_string()),
            vocab.map_or_else(|| "unknown (file not found)".into(), |v| num(v as u64))
        );
    }
    for s in data.stages.iter().filter(|s| s.type_name == "tokenize") {
        let m = &s.stats.metrics;
        let mut vias: Vec<&str> = m.keys().filter_map(|k| k.strip_prefix("tokens.")).collect();
        vias.sort();
        if vias.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "<h3>{} <span class=\"note\">(tokenize)</span></h3><div class=\"scroll\"><table data-stage=\"{}\">\
             <thead><tr><th>source</th><th class=\"n\">documents</th><th class=\"n\">tokens</th>\
             <th class=\"n\">text bytes</th><th class=\"n\">bytes per token</th></tr></thead><tbody>",
            esc(&s.stage),
            esc(&s.stage)
        );
        let mut chart = Vec::new();
        for via in vias {
            let get = |k: &str| m.get(&format!("{k}.{via}")).copied().unwrap_or(0.0);
            let (docs, toks, text_toks, b) = (
                get("documents"),
                get("tokens"),
                get("text_tokens"),
                get("bytes"),
            );
            let bpt = if text_toks > 0.0 { b / text_toks } else { 0.0 };
            let _ = write!(
                out,
                "<tr data-source=\"{}\" data-tokens=\"{toks}\"><td>{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{bpt:.3}</td></tr>",
                esc(via),
                esc(via),
                num(docs as u64),
                num(toks as u64),
                bytes(b as u64)
            );
            chart.push((via.to_string(), toks));
        }
        let _ = write!(
            out,
            "</tbody></table></div><p class=\"note\">Bytes per token: text bytes over the tokens of \
             the text (end-of-document tokens not counted).</p><figure><figcaption>Tokens per \
             source</figcaption>{}</figure>",
            svg::bars(&chart, "tokens per source", |v| num(v as u64))
        );
    }
    for (stage, mix) in &data.mixes {
        let Some(sources) = mix.get("sources").and_then(|s| s.as_object()) else {
            continue;
        };
        let _ = write!(
            out,
            "<h3>{} <span class=\"note\">(mix, training split)</span></h3><div class=\"scroll\">\
             <table data-stage=\"{}\"><thead><tr><th>source</th><th class=\"n\">target share</th>\
             <th class=\"n\">realised share</th><th class=\"n\">epochs</th><th class=\"n\">packed tokens</th>\
             </tr></thead><tbody>",
            esc(stage),
            esc(stage)
        );
        let mut items = Vec::new();
        for (name, r) in sources {
            let train = &r["train"];
            let f = |k: &str| train.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
            let _ = write!(
                out,
                "<tr data-source=\"{}\" data-target-share=\"{}\" data-realised-share=\"{}\" data-epochs=\"{}\">\
                 <td>{}</td><td class=\"n\">{:.1} %</td><td class=\"n\">{:.1} %</td><td class=\"n\">{:.2}</td>\
                 <td class=\"n\">{}</td></tr>",
                esc(name),
                f("target_share"),
                f("realised_share"),
                f("epochs"),
                esc(name),
                100.0 * f("target_share"),
                100.0 * f("realised_share"),
                f("epochs"),
                num(f("packed_tokens") as u64)
            );
            items.push((format!("{name} target"), 100.0 * f("target_share")));
            items.push((format!("{name} realised"), 100.0 * f("realised_share")));
        }
        let _ = write!(
            out,
            "</tbody></table></div><figure><figcaption>Target vs realised share (%)</figcaption>{}</figure>",
            svg::bars(&items, "mixture shares", |v| format!("{v:.1} %"))
        );
    }
    out
}

fn series<'a>(t: &'a Training, name: &'a str, x: &str, y: &str, dots: bool) -> Series<'a> {
    Series {
        name,
        points: t
            .metrics
            .iter()
            .filter_map(|r| Some((r.get(x)?.as_f64()?, r.get(y)?.as_f64()?)))
            .collect(),
        dots,
    }
}

fn training(data: &RunData) -> String {
    let mut out = String::new();
    for t in &data.training {
        let _ = write!(
            out,
            "<h3>{} <span class=\"note\">(train)</span></h3>",
            esc(&t.stage)
        );
        if t.metrics.is_empty() {
            out.push_str("<p>No metrics written yet.</p>");
            continue;
        }
        if let Some(s) = &t.summary {
            out.push_str("<div class=\"scroll\"><table><tbody>");
            for key in [
                "mode",
                "parameters",
                "steps",
                "tokens",
                "first_loss",
                "final_loss",
                "val_loss",
                "val_bpb",
                "unigram_bpb",
                "elapsed_s",
            ] {
                if let Some(v) = s.get(key).filter(|v| !v.is_null()) {
                    let _ = write!(
                        out,
                        "<tr data-metric=\"{key}\"><th>{}</th><td class=\"n\">{}</td></tr>",
                        key.replace('_', " "),
                        esc(&match v.as_f64() {
                            Some(f) if f.fract() != 0.0 => format!("{f:.4}"),
                            _ => v.to_string().trim_matches('"').to_string(),
                        })
                    );
                }
            }
            out.push_str("</tbody></table></div>");
        }
        let unigram = t
            .summary
            .as_ref()
            .and_then(|s| s.get("unigram_bpb")?.as_f64());
        let mut figs = String::new();
        let mut fig = |caption: &str, chart: String| {
            let _ = write!(
                figs,
                "<figure data-chart=\"{}\"><figcaption>{}</figcaption>{chart}</figure>",
                esc(caption),
                esc(caption)
            );
        };
        let loss = [
            series(t, "train loss", "step", "loss", false),
            series(t, "validation loss", "step", "val_loss", true),
        ];
        fig(
            "loss vs step",
            svg::lines(&loss, &[], "step", "loss", "loss vs step"),
        );
        let loss_t = [
            series(t, "train loss", "tokens", "loss", false),
            series(t, "validation loss", "tokens", "val_loss", true),
        ];
        fig(
            "loss vs tokens",
            svg::lines(&loss_t, &[], "tokens", "loss", "loss vs tokens"),
        );
        let bpb = [series(
            t,
            "validation bits per byte",
            "step",
            "val_bpb",
            true,
        )];
        if !bpb[0].points.is_empty() {
            let refs: Vec<(&str, f64)> = unigram.map(|u| ("unigram", u)).into_iter().collect();
            fig(
                "validation bits per byte vs step (unigram baseline dashed)",
                svg::lines(&bpb, &refs, "step", "bits per byte", "bits per byte"),
            );
        }
        for (caption, key, label) in [
            ("learning rate vs step", "lr", "learning rate"),
            ("gradient norm vs step", "grad_norm", "grad norm"),
            ("tokens/s vs step", "tokens_per_s", "tokens/s"),
        ] {
            let s = [series(t, label, "step", key, false)];
            fig(caption, svg::lines(&s, &[], "step", label, caption));
        }
        let _ = write!(out, "<div class=\"grid\">{figs}</div>");
    }
    out
}

fn synthetic(data: &RunData) -> String {
    let mut out = String::new();
    for s in data.stages.iter().filter(|s| is_synth(s)) {
        let _ = write!(
            out,
            "<h3>{} <span class=\"note\">({})</span></h3><p>{} rows kept of {}; dropped: {}. \
             Examples of each are under <a href=\"#examples\">Reasons and examples</a>.</p>",
            esc(&s.stage),
            esc(&s.type_name),
            num(s.stats.rows_kept),
            num(s.stats.rows_in),
            reasons_text(&s.stats.rejected)
        );
        let mut figs = String::new();
        for name in s.stats.histograms.keys() {
            figs.push_str(&histogram_figure(s, name));
        }
        let _ = write!(out, "<div class=\"grid\">{figs}</div>");
        let metrics: Vec<_> = s
            .stats
            .metrics
            .iter()
            .filter(|(k, _)| {
                !k.starts_with("rouge_vs_seeds_0") && !k.starts_with("rouge_vs_seeds_1")
            })
            .collect();
        if !metrics.is_empty() {
            out.push_str("<details><summary>Client and length figures</summary><table><tbody>");
            for (k, v) in metrics {
                let _ = write!(
                    out,
                    "<tr><th>{}</th><td class=\"n\">{}</td></tr>",
                    esc(k),
                    svg::short_num(*v)
                );
            }
            out.push_str("</tbody></table></details>");
        }
    }
    out
}
