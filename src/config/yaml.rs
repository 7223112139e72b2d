//! A YAML document as a tree of nodes that remember where they start, so every config error can
//! point at `FILE:LINE:COL`. Built from `yaml-rust2`'s marked event stream.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

pub use crate::diagnostic::Span;

fn span_of(m: Marker) -> Span {
    // yaml-rust2 lines are 1-based, columns 0-based.
    Span {
        line: m.line(),
        col: m.col() + 1,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// `quoted` is false for plain scalars: those may still be read as strings where one is
    /// expected (`name: 2024` is a fine name).
    Str {
        value: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The text of a scalar as written, whatever type it resolved to.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str { value, .. } => Some(value.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => None,
            _ => None,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str { .. } => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Entries of a mapping node, `None` for any other node.
    pub fn entries(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

/// A syntax error in the YAML text itself.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub span: Span,
    pub message: String,
}

/// Parses one YAML document. An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        span: span_of(*e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        span: Span { line: 1, col: 1 },
    }))
}

/// Nodes a document may expand to, aliases included. A pipeline file has hundreds; the limit
/// stops an alias bomb (anchors of anchors, each doubling) before it is cloned into memory.
pub const MAX_NODES: usize = 100_000;
/// Nesting a document may have: deeper trees would overflow the stack of the recursive code that
/// reads (and drops) them; a pipeline file nests a handful of levels.
pub const MAX_DEPTH: usize = 64;

enum Frame {
    Seq(Span, Vec<Node>, usize),
    Map(Span, Vec<(Node, Node)>, Option<Node>, usize),
}

/// Text a document may expand to (its scalars, aliases copying theirs): a megabyte string
/// aliased a hundred thousand times is a "byte bomb" within the node limit.
pub const MAX_TEXT_BYTES: usize = 64 << 20;

/// What a node holds: nodes, bytes of text, levels of nesting (itself included).
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
    depth: usize,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Each anchored node, with what it holds.
    anchors: HashMap<usize, (Node, Size)>,
    error: Option<SyntaxError>,
    /// Nodes in the document so far, each alias counting the nodes it copies.
    nodes: usize,
    /// Bytes of scalar text so far, aliases counting what they copy.
    bytes: usize,
}

/// What `node` holds. Recursive, but nesting is bounded by [`MAX_DEPTH`] before it gets here.
fn size_of(node: &Node) -> Size {
    let children: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Map(entries) => entries.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    };
    let mut size = Size {
        nodes: 1,
        bytes: match &node.value {
            Value::Str { value, .. } => value.len(),
            _ => 0,
        },
        depth: 0,
    };
    for c in children {
        let s = size_of(c);
        size.nodes += s.nodes;
        size.bytes += s.bytes;
        size.depth = size.depth.max(s.depth);
    }
    size.depth += 1;
    size
}

impl Builder {
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let size = size_of(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(_, items, _)) => items.push(node),
            Some(Frame::Map(_, entries, pending_key, _)) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let span = span_of(mark);
        if self.error.is_some() && self.nodes > MAX_NODES {
            return;
        }
        let adds = match &ev {
            Event::Scalar(text, ..) => Size {
                nodes: 1,
                bytes: text.len(),
                depth: 1,
            },
            Event::SequenceStart(..) | Event::MappingStart(..) => Size {
                nodes: 1,
                bytes: 0,
                depth: 1,
            },
            Event::Alias(id) => self.anchors.get(id).map_or(Size::default(), |a| a.1),
            _ => Size::default(),
        };
        self.nodes = self.nodes.saturating_add(adds.nodes);
        self.bytes = self.bytes.saturating_add(adds.bytes);
        // An alias nests what it copies where it stands.
        if self.stack.len() + adds.depth > MAX_DEPTH {
            self.error = Some(SyntaxError {
                span,
                message: format!("the document nests more than {MAX_DEPTH} levels deep"),
            });
            self.nodes = usize::MAX;
            return;
        }
        if self.bytes > MAX_TEXT_BYTES {
            self.error = Some(SyntaxError {
                span,
                message: format!(
                    "the document's text expands to more than {} MiB (aliases copy what they \
                     name); a pipeline file needs far less",
                    MAX_TEXT_BYTES >> 20
                ),
            });
            self.nodes = usize::MAX;
            return;
        }
        if self.nodes > MAX_NODES {
            self.error = Some(SyntaxError {
                span,
                message: format!(
                    "the document expands to more than {MAX_NODES} nodes (aliases of anchors \
                     copy what they name); a pipeline file needs far fewer"
                ),
            });
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let value = if style == TScalarStyle::Plain {
                    resolve_plain(text)
                } else {
                    Value::Str {
                        value: text,
                        quoted: true,
                    }
                };
                self.push_node(Node { value, span }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq(span, Vec::new(), anchor))
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(span, Vec::new(), None, anchor))
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(span, items, anchor)) = self.stack.pop() {
                    self.push_node(
                        Node {
                            value: Value::Seq(items),
                            span,
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(span, entries, _, anchor)) = self.stack.pop() {
                    if let Some(dup) = first_duplicate_key(&entries) {
                        self.error.get_or_insert(SyntaxError {
                            span: dup.span,
                            message: format!(
                                "duplicate key `{}`",
                                dup.scalar_text().unwrap_or_default()
                            ),
                        });
                    }
                    self.push_node(
                        Node {
                            value: Value::Map(entries),
                            span,
                        },
                        anchor,
                    );
                }
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).map(|a| a.0.clone()).unwrap_or(Node {
                    value: Value::Null,
                    span,
                });
                self.push_node(node, 0);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

fn first_duplicate_key(entries: &[(Node, Node)]) -> Option<&Node> {
    let mut seen = std::collections::HashSet::new();
    entries
        .iter()
        .map(|(k, _)| k)
        .find(|k| k.scalar_text().is_some_and(|t| !seen.insert(t)))
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(&text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i64>()
    {
        return Value::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    let looks_numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric && let Ok(f) = text.parse::<f64>() {
        return Value::Float(f);
    }
    Value::Str {
        value: text,
        quoted: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_one_based() {
        let node = parse("name: x\nstages:\n  - {id: a, type: sql}\n").unwrap();
        let stages = node.get("stages").unwrap();
        assert_eq!(stages.span.line, 3);
        let Value::Seq(items) = &stages.value else {
            panic!("not a seq")
        };
        let id = items[0].get("id").unwrap();
        assert_eq!((id.span.line, id.span.col), (3, 10));
    }

    #[test]
    fn plain_scalars_resolve() {
        let node = parse("a: 1\nb: 0.5\nc: true\nd: ~\ne: '1'\nf: 1e3\ng: v1.2").unwrap();
        assert_eq!(node.get("a").unwrap().value, Value::Int(1));
        assert_eq!(node.get("b").unwrap().value, Value::Float(0.5));
        assert_eq!(node.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(node.get("d").unwrap().value, Value::Null);
        assert!(matches!(
            node.get("e").unwrap().value,
            Value::Str { quoted: true, .. }
        ));
        assert_eq!(node.get("f").unwrap().value, Value::Float(1000.0));
        assert!(matches!(
            node.get("g").unwrap().value,
            Value::Str { quoted: false, .. }
        ));
    }

    #[test]
    fn an_alias_bomb_is_an_error_before_it_is_expanded() {
        // Nine levels of nine aliases: 9^9 (387 M) nodes if expanded.
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..=9 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&doc).unwrap_err();
        assert!(
            err.message.contains("more than 100000 nodes"),
            "{}",
            err.message
        );
        assert_eq!(err.span.line, 6);
        // A byte bomb: a 1 MB string aliased 100 times.
        let bytes = format!(
            "a: &a \"{}\"\nb: [{}]\n",
            "x".repeat(1 << 20),
            vec!["*a"; 100].join(", ")
        );
        let err = parse(&bytes).unwrap_err();
        assert!(err.message.contains("more than 64 MiB"), "{}", err.message);
        // Depth through aliases: each anchor nests the one before it ten levels deeper.
        let mut chain = String::from("a0: &a0 [[[[[[[[[[1]]]]]]]]]]\n");
        for i in 1..10 {
            chain.push_str(&format!("a{i}: &a{i} [[[[[[[[[[*a{}]]]]]]]]]]\n", i - 1));
        }
        let err = parse(&chain).unwrap_err();
        assert!(
            err.message.contains("more than 64 levels"),
            "{}",
            err.message
        );
        // Deep nesting: yaml-rust2 stops it itself past a few hundred levels; below that, we do.
        for depth in [70, 100_000] {
            let deep = format!("a: {}{}", "[".repeat(depth), "]".repeat(depth));
            let err = parse(&deep).unwrap_err();
            assert!(
                err.message.contains("more than 64 levels")
                    || err.message.contains("recursion limit"),
                "{depth}: {}",
                err.message
            );
        }
        // Aliases that stay small are fine.
        let ok = parse("base: &b {x: 1, y: [1, 2]}\nother: *b\n").unwrap();
        assert_eq!(ok.get("other"), ok.get("base"));
    }

    #[test]
    fn syntax_errors_and_duplicate_keys_have_positions() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.span.line >= 1);
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.span.line, 3);
        assert!(err.message.contains("duplicate key"));
    }
}
