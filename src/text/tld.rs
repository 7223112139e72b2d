//! Registered domains as `tldextract` 5.4.0 finds them (what datatrove's `URLFilter` looks up):
//! the host of a URL taken as leniently as tldextract takes it, split into subdomain, domain and
//! public suffix by the ICANN section of the Public Suffix List snapshot tldextract ships
//! (`filters/url_filter/public_suffix_list.dat`, 2025-04-07). The parts keep the URL's case and
//! form; only the suffix lookup lowercases labels and decodes punycode.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::OnceLock;

use super::python;

/// The PSL snapshot of tldextract 5.4.0's wheel (`tldextract/.tld_set_snapshot`, MPL-2.0).
const SNAPSHOT: &str = include_str!("../../filters/url_filter/public_suffix_list.dat");

/// A URL's host split as tldextract splits it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extracted {
    pub subdomain: String,
    pub domain: String,
    pub suffix: String,
}

impl Extracted {
    /// `domain.suffix` when both are there (tldextract's `registered_domain`), else empty.
    pub fn registered_domain(&self) -> String {
        if self.domain.is_empty() || self.suffix.is_empty() {
            return String::new();
        }
        format!("{}.{}", self.domain, self.suffix)
    }

    /// The whole host when it has a domain and a suffix (tldextract's `fqdn`), else empty.
    pub fn fqdn(&self) -> String {
        if self.domain.is_empty() || self.suffix.is_empty() {
            return String::new();
        }
        [&self.subdomain, &self.domain, &self.suffix]
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }
}

#[derive(Default)]
struct Node {
    end: bool,
    children: HashMap<String, Node>,
}

/// The public (ICANN) rules as a trie of reversed labels; `*` and `!label` are plain labels.
fn trie() -> &'static Node {
    static TRIE: OnceLock<Node> = OnceLock::new();
    TRIE.get_or_init(|| {
        let public = SNAPSHOT
            .split("// ===BEGIN PRIVATE DOMAINS===")
            .next()
            .unwrap_or("");
        let mut root = Node::default();
        for line in public.lines() {
            let rule = line.trim();
            if rule.is_empty() || rule.starts_with("//") {
                continue;
            }
            let mut node = &mut root;
            for label in rule.split('.').rev() {
                node = node.children.entry(label.to_string()).or_default();
            }
            node.end = true;
        }
        root
    })
}

/// tldextract's `_decode_punycode`: lowercase, and an `xn--` label decoded (kept as is when it
/// does not decode).
fn lookup_label(label: &str) -> String {
    let lowered = label.to_lowercase();
    if let Some(encoded) = lowered.strip_prefix("xn--")
        && let Some(decoded) = idna::punycode::decode_to_string(encoded)
    {
        return decoded;
    }
    lowered
}

/// The index of the first label of the public suffix; `None` when no rule matches.
fn suffix_index(labels: &[&str]) -> Option<usize> {
    let mut node = trie();
    let mut suffix_idx = labels.len();
    let mut label_idx = labels.len();
    for label in labels.iter().rev() {
        let decoded = lookup_label(label);
        if let Some(next) = node.children.get(&decoded) {
            label_idx -= 1;
            node = next;
            if node.end {
                suffix_idx = label_idx;
            }
            continue;
        }
        if node.children.contains_key("*") {
            let exception = node.children.contains_key(&format!("!{decoded}"));
            return Some(if exception { label_idx } else { label_idx - 1 });
        }
        break;
    }
    (suffix_idx != labels.len()).then_some(suffix_idx)
}

const SCHEME_CHARS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.";

/// The URL without `scheme://` (or a leading `//`).
fn schemeless(url: &str) -> &str {
    let Some(i) = url.find("//") else {
        return url;
    };
    if i == 0 {
        return &url[2..];
    }
    if i < 2
        || url.as_bytes()[i - 1] != b':'
        || url[..i - 1].chars().any(|c| !SCHEME_CHARS.contains(c))
    {
        return url;
    }
    &url[i + 2..]
}

/// tldextract's `lenient_netloc`: the host, without user info, port and trailing root dots.
fn lenient_netloc(url: &str) -> &str {
    let rest = schemeless(url);
    let authority = rest
        .split('/')
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
        .split('#')
        .next()
        .unwrap_or("");
    let after_userinfo = authority.rsplit('@').next().unwrap_or("");
    if after_userinfo.starts_with('[')
        && let Some(end) = after_userinfo.find(']')
    {
        return &after_userinfo[..=end];
    }
    let host = after_userinfo.split(':').next().unwrap_or("");
    python::strip(host).trim_end_matches(['.', '\u{3002}', '\u{ff0e}', '\u{ff61}'])
}

/// `ipaddress.IPv6Address(text)` parses (a zone after `%` allowed).
fn looks_like_ipv6(text: &str) -> bool {
    let address = match text.split_once('%') {
        Some((a, zone)) if !zone.is_empty() && !zone.contains('%') => a,
        Some(_) => return false,
        None => text,
    };
    address.parse::<Ipv6Addr>().is_ok()
}

/// tldextract's `looks_like_ip`: a dotted quad without leading zeros.
fn looks_like_ip(host: &str) -> bool {
    if !host.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|b| b.is_ascii_digit())
                && !(p.len() > 1 && p.starts_with('0'))
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

/// Splits a URL's host as `tldextract.TLDExtract()(url)` does with the bundled snapshot.
pub fn extract(url: &str) -> Extracted {
    let netloc = lenient_netloc(url);
    let host = netloc.replace(['\u{3002}', '\u{ff0e}', '\u{ff61}'], ".");
    if host.len() >= 4
        && host.starts_with('[')
        && host.ends_with(']')
        && looks_like_ipv6(&host[1..host.len() - 1])
    {
        return Extracted {
            domain: host,
            ..Default::default()
        };
    }
    let labels: Vec<&str> = host.split('.').collect();
    let index = suffix_index(&labels);
    if index.is_none() && labels.len() == 4 && looks_like_ip(&host) {
        return Extracted {
            domain: host.clone(),
            ..Default::default()
        };
    }
    match index {
        None => Extracted {
            subdomain: labels[..labels.len() - 1].join("."),
            domain: labels[labels.len() - 1].to_string(),
            suffix: String::new(),
        },
        Some(i) => Extracted {
            subdomain: if i >= 2 {
                labels[..i - 1].join(".")
            } else {
                String::new()
            },
            domain: if i > 0 {
                labels[i - 1].to_string()
            } else {
                String::new()
            },
            suffix: labels[i..].join("."),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (String, String, String) {
        let e = extract(url);
        (e.subdomain, e.domain, e.suffix)
    }

    fn t(a: &str, b: &str, c: &str) -> (String, String, String) {
        (a.into(), b.into(), c.into())
    }

    /// Cases from tldextract 5.4.0's behaviour, as the URL filter goldens record it.
    #[test]
    fn splits_hosts_as_tldextract() {
        assert_eq!(
            parts("https://www.example.co.uk/a?b#c"),
            t("www", "example", "co.uk")
        );
        assert_eq!(parts("HtTpS://WwW.ExAmPlE.CoM"), t("WwW", "ExAmPlE", "CoM"));
        assert_eq!(
            parts("http://user:pw@good.com@evil.com:8080/"),
            t("", "evil", "com")
        );
        assert_eq!(parts("http://evil.com#@good.com"), t("", "evil", "com"));
        assert_eq!(parts("mailto:someone@example.com"), t("", "example", "com"));
        assert_eq!(parts("example.com:80"), t("", "example", "com"));
        assert_eq!(parts("http://8.8.8.8/"), t("", "8.8.8.8", ""));
        assert_eq!(
            parts("http://[2001:db8::1]:443/"),
            t("", "[2001:db8::1]", "")
        );
        assert_eq!(parts("http://01.02.03.04/"), t("01.02.03", "04", ""));
        assert_eq!(parts("http://co.uk/"), t("", "", "co.uk"));
        assert_eq!(parts("http://foo.ck/"), t("", "", "foo.ck"));
        assert_eq!(parts("http://www.ck/"), t("", "www", "ck"));
        assert_eq!(
            parts("http://city.kawasaki.jp/"),
            t("", "city", "kawasaki.jp")
        );
        assert_eq!(parts("http://x.blogspot.com/"), t("x", "blogspot", "com"));
        assert_eq!(parts("http://bücher.example/"), t("bücher", "example", ""));
        assert_eq!(
            parts("http://example.xn--p1ai/"),
            t("", "example", "xn--p1ai")
        );
        assert_eq!(parts("http://0-1avsex.com。/"), t("", "0-1avsex", "com"));
        assert_eq!(parts("http://example。com/"), t("", "example", "com"));
        assert_eq!(parts("  http://example.com/  "), t("", "http", ""));
        let e = extract("http://a.b.example.com/");
        assert_eq!(e.registered_domain(), "example.com");
        assert_eq!(e.fqdn(), "a.b.example.com");
        assert_eq!(extract("http://8.8.8.8/").fqdn(), "");
    }
}
