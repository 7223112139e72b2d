//! HTML helpers for the report: escaping, number and time formatting, and the page shell with
//! its inline style sheet (no script, no external resource).

use std::fmt::Write;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Other C0/C1 controls are parse errors in HTML; tab, newline, carriage return and
            // form feed are whitespace there.
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r' | '\x0c') => {
                out.push('\u{fffd}')
            }
            c => out.push(c),
        }
    }
    out
}

/// An integer with thousands separators: 1,234,567.
pub fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as B, KB, MB, GB (powers of 1000).
pub fn bytes(n: u64) -> String {
    let v = n as f64;
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} KB", v / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", v / 1e6),
        _ => format!("{:.2} GB", v / 1e9),
    }
}

pub fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1} %", 100.0 * part as f64 / whole as f64)
    }
}

/// At most `n` characters, with an ellipsis when cut.
pub fn short(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Unix seconds as `2026-12-06 18:31:26 UTC`.
pub fn time(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!(
            "{:.0} h {:.0} min",
            (s / 3600.0).floor(),
            (s % 3600.0) / 60.0
        )
    }
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#24364f;color:#fff;padding:14px 20px}
header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#cfd8e6}
nav{display:flex;flex-wrap:wrap;gap:4px 14px;padding:8px 20px;background:#e9edf3;position:sticky;top:0;z-index:1}
nav a{color:#24364f;text-decoration:none}
main{max-width:1200px;margin:0 auto;padding:0 20px 40px}
section{margin-top:26px}
h2{font-size:18px;border-bottom:2px solid #24364f;padding-bottom:3px}
h3{font-size:15px;margin:18px 0 6px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ok{color:#2c7a3f;font-weight:600}.bad{color:#b3261e;font-weight:600}
.warn{background:#fff4d6;border:1px solid #e0b84f;padding:8px 12px;border-radius:4px}
.note{color:#666;font-size:12.5px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(500px,1fr));gap:10px 18px}
.examples{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:0 14px}
figure{margin:0;background:#fff;border:1px solid #e2e2e2;border-radius:4px;padding:6px}
figcaption{font-size:12.5px;color:#444;margin-bottom:2px}
svg.chart{width:100%;height:auto;display:block;max-width:900px}
svg.chart.bars{max-width:640px}
svg text{font-family:system-ui,sans-serif}
svg .lbl{font-size:13px;fill:#333}svg .val{font-size:12px;fill:#555}
svg .axis{font-size:13px;fill:#222}svg .thr{font-size:12.5px;fill:#b3261e;paint-order:stroke;stroke:#fff;stroke-width:3px}
details{background:#fff;border:1px solid #e2e2e2;border-radius:4px;margin:6px 0;padding:4px 10px}
summary{cursor:pointer}
.example{border-left:3px solid #b84a4a;margin:6px 0;padding:2px 8px;background:#fff}
.example.kept{border-left-color:#3a9d5d}
.example pre{white-space:pre-wrap;word-break:break-word;margin:2px 0;font-size:12px;max-height:9.5em;overflow:auto;background:#f6f6f6;padding:4px}
.meta{font-size:12px;color:#555}
pre.pipeline{white-space:pre-wrap;word-break:break-word;background:#fff;border:1px solid #e2e2e2;padding:8px;font-size:12px}
"#;

/// The whole page around `body`.
pub fn page(title: &str, subtitle: &str, nav: &[(&str, &str)], body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 4096);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\
         <header><h1>{}</h1><p>{}</p></header><nav>",
        esc(title),
        esc(title),
        esc(subtitle)
    );
    for (id, name) in nav {
        let _ = write!(out, "<a href=\"#{id}\">{}</a>", esc(name));
    }
    out.push_str("</nav><main>");
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(num(1234567), "1,234,567");
        assert_eq!(num(12), "12");
        assert_eq!(time(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_796_581_886.0), "2026-12-06 18:31:26 UTC");
        assert_eq!(short("abcdef", 3), "abc…");
    }
}
