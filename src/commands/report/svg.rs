//! Inline SVG charts for the report: no script, no network, drawn at a fixed view box and scaled
//! by the browser, so they stay readable from phone width to a wide screen.

use std::fmt::Write;

use super::html::{esc, num, short};
use crate::io::stats::{Drops, Histogram, Scale};

const W: f64 = 600.0;
const PAD_L: f64 = 56.0;
const PAD_R: f64 = 30.0;
const PAD_T: f64 = 14.0;
const PAD_B: f64 = 34.0;
const COLORS: [&str; 8] = [
    "#3b6fb6", "#d9822b", "#3a9d5d", "#b84a4a", "#7b5ea7", "#8c6d46", "#c15fa4", "#5f7f8c",
];

pub fn color(i: usize) -> &'static str {
    COLORS[i % COLORS.len()]
}

fn open(out: &mut String, h: f64, label: &str) {
    open_class(out, h, label, "chart");
}

fn open_class(out: &mut String, h: f64, label: &str, class: &str) {
    let _ = write!(
        out,
        r#"<svg class="{class}" viewBox="0 0 {W} {h}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(label)
    );
}

/// Horizontal bars, one per item, labelled with the item and its value.
pub fn bars(items: &[(String, f64)], label: &str, fmt: impl Fn(f64) -> String) -> String {
    let row = 20.0;
    let h = PAD_T + row * items.len() as f64 + 8.0;
    let max = items.iter().map(|i| i.1).fold(0.0, f64::max).max(1e-12);
    let label_w = 170.0;
    let bar_w = W - label_w - 90.0;
    let mut out = String::new();
    open_class(&mut out, h, label, "chart bars");
    for (k, (name, v)) in items.iter().enumerate() {
        let y = PAD_T + row * k as f64;
        let w = (v / max * bar_w).max(if *v > 0.0 { 1.0 } else { 0.0 });
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end" class="lbl">{}</text><rect x="{label_w}" y="{}" width="{w:.1}" height="{}" fill="{}"><title>{}: {}</title></rect><text x="{}" y="{}" class="val">{}</text>"#,
            label_w - 6.0,
            y + 13.0,
            esc(&short(name, 22)),
            y + 2.0,
            row - 5.0,
            color(0),
            esc(name),
            esc(&fmt(*v)),
            label_w + w + 4.0,
            y + 13.0,
            esc(&fmt(*v)),
        );
    }
    out.push_str("</svg>");
    out
}

/// A histogram's bins as columns, the values outside its range noted, and its thresholds drawn
/// with the dropped side shaded.
pub fn histogram(h: &Histogram, label: &str) -> String {
    let ht = 190.0;
    let plot_w = W - PAD_L - PAD_R;
    let plot_h = ht - PAD_T - PAD_B;
    let max = h.bins.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = h.bins.len() as f64;
    let mut out = String::new();
    open(&mut out, ht, label);
    let x_of = |f: f64| PAD_L + f * plot_w;
    let mut labels = String::new();
    for (k, (t, drops)) in h.thresholds.iter().enumerate() {
        let f = h.fraction(*t);
        let x = x_of(f);
        // The label goes on the dropped side, unless that side has no room for it.
        let left = match drops {
            Drops::Below => f > 0.3,
            Drops::Above => f > 0.7,
        };
        let (x0, x1) = match drops {
            Drops::Below => (PAD_L, x),
            Drops::Above => (x, PAD_L + plot_w),
        };
        let _ = write!(
            out,
            r##"<rect x="{x0:.1}" y="{PAD_T}" width="{:.1}" height="{plot_h}" fill="#b84a4a" opacity="0.10"/><line x1="{x:.1}" x2="{x:.1}" y1="{PAD_T}" y2="{}" stroke="#b84a4a" stroke-width="1.5" stroke-dasharray="4 3" class="threshold"/>"##,
            (x1 - x0).max(0.0),
            PAD_T + plot_h,
        );
        // Labels go on top of the bars, drawn last.
        let _ = write!(
            labels,
            r##"<text x="{:.1}" y="{}" class="thr" text-anchor="{}">{} {}</text>"##,
            x + if left { -3.0 } else { 3.0 },
            PAD_T + 11.0 + 13.0 * k as f64,
            if left { "end" } else { "start" },
            if *drops == Drops::Below {
                "drop below"
            } else {
                "drop above"
            },
            esc(&short_num(*t)),
        );
    }
    for (k, &c) in h.bins.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let bh = c as f64 / max * plot_h;
        let _ = write!(
            out,
            r#"<rect class="bin" x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>[{}, {}): {}</title></rect>"#,
            x_of(k as f64 / n) + 0.5,
            PAD_T + plot_h - bh,
            (plot_w / n - 1.0).max(0.5),
            color(0),
            esc(&short_num(h.edge(k))),
            esc(&short_num(h.edge(k + 1))),
            num(c),
        );
    }
    out.push_str(&labels);
    axes(&mut out, plot_w, plot_h, &short_num(max));
    for k in ticks(h) {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" class="lbl">{}</text>"#,
            x_of(k as f64 / n),
            PAD_T + plot_h + 14.0,
            esc(&short_num(h.edge(k))),
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{}" text-anchor="middle" class="axis">{}{}</text>"#,
        PAD_L + plot_w / 2.0,
        ht - 4.0,
        esc(&h.label),
        if h.scale == Scale::Log10 {
            " (log scale)"
        } else {
            ""
        }
    );
    out.push_str("</svg>");
    out
}

/// Bin edges to label: quarters of a linear range; powers of ten of a log range (at most 8).
fn ticks(h: &Histogram) -> Vec<usize> {
    let n = h.bins.len();
    if h.scale == Scale::Linear {
        return (0..=4).map(|t| t * n / 4).collect();
    }
    let decades: Vec<usize> = (0..=n)
        .filter(|&k| {
            let e = h.edge(k).log10();
            (e - e.round()).abs() < 1e-6
        })
        .collect();
    let step = decades.len().div_ceil(8).max(1);
    decades.into_iter().step_by(step).collect()
}

fn axes(out: &mut String, plot_w: f64, plot_h: f64, top: &str) {
    let _ = write!(
        out,
        r##"<line x1="{PAD_L}" x2="{}" y1="{}" y2="{}" stroke="#888"/><line x1="{PAD_L}" x2="{PAD_L}" y1="{PAD_T}" y2="{}" stroke="#888"/><text x="{}" y="{}" text-anchor="end" class="lbl">{}</text><text x="{}" y="{}" text-anchor="end" class="lbl">0</text>"##,
        PAD_L + plot_w,
        PAD_T + plot_h,
        PAD_T + plot_h,
        PAD_T + plot_h,
        PAD_L - 4.0,
        PAD_T + 8.0,
        esc(top),
        PAD_L - 4.0,
        PAD_T + plot_h,
    );
}

/// A number short enough for an axis: 0.35, 12, 3.2k, 1.5M.
pub fn short_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.3}G", v / 1e9).replace(".000", "")
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6).replace(".0M", "M")
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        // Learning rates: 0.0015 must not print as 0.002 beside 0.002.
        format!("{v:.1e}")
    }
}

/// One series of a line chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    /// Draw dots only (sparse points, such as validation losses).
    pub dots: bool,
}

/// Lines over a shared x axis, with optional horizontal reference lines (a baseline).
pub fn lines(
    series: &[Series],
    refs: &[(&str, f64)],
    x_label: &str,
    y_label: &str,
    label: &str,
) -> String {
    let ht = 220.0;
    let plot_w = W - PAD_L - PAD_R;
    let plot_h = ht - PAD_T - PAD_B - 14.0;
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all.filter(|p| p.0.is_finite() && p.1.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    for &(_, y) in refs {
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let mut out = String::new();
    open(&mut out, ht, label);
    if x0 > x1 {
        out.push_str(
            r#"<text x="300" y="100" text-anchor="middle" class="lbl">no points</text></svg>"#,
        );
        return out;
    }
    // Losses, rates and norms are read from zero.
    y0 = y0.min(0.0);
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + 1.0;
    }
    let px = |x: f64| PAD_L + (x - x0) / (x1 - x0) * plot_w;
    let py = |y: f64| PAD_T + plot_h - (y - y0) / (y1 - y0) * plot_h;
    for (k, &(name, y)) in refs.iter().enumerate() {
        let _ = write!(
            out,
            r##"<line x1="{PAD_L}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="5 4" class="ref"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="thr">{} {}</text>"##,
            PAD_L + plot_w,
            py(y),
            py(y),
            PAD_L + plot_w - 2.0,
            py(y) - 3.0 - 11.0 * k as f64,
            esc(name),
            esc(&short_num(y)),
        );
    }
    for (k, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        if s.dots {
            for p in &pts {
                let (x, y) = p.split_once(',').expect("x,y");
                let _ = write!(
                    out,
                    r#"<circle cx="{x}" cy="{y}" r="2.5" fill="{}"/>"#,
                    color(k)
                );
            }
        } else {
            let _ = write!(
                out,
                r#"<polyline class="line" fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
                color(k),
                pts.join(" ")
            );
        }
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{}" width="10" height="3" fill="{}"/><text x="{:.1}" y="{}" class="lbl">{}</text>"#,
            PAD_L + 8.0 + 150.0 * k as f64,
            ht - 9.0,
            color(k),
            PAD_L + 22.0 + 150.0 * k as f64,
            ht - 5.0,
            esc(s.name),
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{PAD_L}" x2="{}" y1="{}" y2="{}" stroke="#888"/><line x1="{PAD_L}" x2="{PAD_L}" y1="{PAD_T}" y2="{}" stroke="#888"/>"##,
        PAD_L + plot_w,
        PAD_T + plot_h,
        PAD_T + plot_h,
        PAD_T + plot_h,
    );
    for t in 0..=4 {
        let f = t as f64 / 4.0;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="lbl">{}</text><text x="{:.1}" y="{}" text-anchor="middle" class="lbl">{}</text>"#,
            PAD_L - 4.0,
            py(y0 + f * (y1 - y0)) + 4.0,
            esc(&short_num(y0 + f * (y1 - y0))),
            px(x0 + f * (x1 - x0)),
            PAD_T + plot_h + 13.0,
            esc(&short_num(x0 + f * (x1 - x0))),
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{}" text-anchor="middle" class="axis">{} vs {}</text>"#,
        PAD_L + plot_w / 2.0,
        PAD_T + plot_h + 27.0,
        esc(y_label),
        esc(x_label),
    );
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::short_num;

    #[test]
    fn axis_numbers_stay_distinct_and_short() {
        assert_eq!(short_num(0.0), "0");
        assert_eq!(short_num(0.25), "0.250");
        assert_eq!(short_num(0.0015), "1.5e-3");
        assert_eq!(short_num(0.002), "2.0e-3");
        assert_eq!(short_num(3.5), "3.50");
        assert_eq!(short_num(443_394.0), "443k");
        assert_eq!(short_num(1_500_000.0), "1.5M");
    }
}
