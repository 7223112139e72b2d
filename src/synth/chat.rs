//! Chat templates: how a list of messages becomes the text a model continues.
//!
//! Models ship their template as Jinja source (`tokenizer.chat_template` in GGUF,
//! `chat_template.jinja` in a transformers folder). grist does not run Jinja; it recognises the
//! template families it implements and renders them natively. Today that is ChatML (SmolLM2,
//! Qwen, Hermes): `<|im_start|>{role}\n{content}<|im_end|>\n` per message, with the template's
//! default system prompt when the conversation has none. Any other template is a clear error,
//! and `/v1/completions` still works with such a model.

use serde::{Deserialize, Serialize};

use crate::error::{GristError, Result};

/// One chat message, as OpenAI's API carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A recognised chat template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    ChatMl {
        /// Inserted as the first message when the conversation has no system message.
        default_system: Option<String>,
    },
}

/// A piece of a rendered chat prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    /// A control token of the template (`<|im_start|>`); otherwise text, in which any
    /// special-token string is plain text.
    pub control: bool,
}

impl Segment {
    fn control(text: &str) -> Segment {
        Segment {
            text: text.to_string(),
            control: true,
        }
    }

    fn text(text: String) -> Segment {
        Segment {
            text,
            control: false,
        }
    }
}

const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";

impl ChatTemplate {
    /// Recognises `source` (Jinja).
    pub fn from_jinja(source: &str) -> Result<ChatTemplate> {
        if source.contains(IM_START) && source.contains(IM_END) {
            return Ok(ChatTemplate::ChatMl {
                default_system: default_system(source),
            });
        }
        Err(GristError::Usage(
            "the model's chat template is not ChatML, the one family grist renders; use /v1/completions (or `api: completions`) with your own prompt format".into(),
        ))
    }

    /// The prompt for `messages`, ending where the assistant's reply starts.
    pub fn render(&self, messages: &[Message]) -> String {
        self.segments(messages)
            .into_iter()
            .map(|s| s.text)
            .collect()
    }

    /// The prompt for `messages` as pieces: the template's own control tokens, and text (the
    /// roles and contents a client sent, and the template's text between the control tokens).
    /// Text pieces are cut where the control tokens cut a rendered prompt, so encoding each
    /// piece on its own gives the ids of the whole.
    pub fn segments(&self, messages: &[Message]) -> Vec<Segment> {
        match self {
            ChatTemplate::ChatMl { default_system } => {
                let mut out = Vec::new();
                let mut turn = |role: &str, content: &str| {
                    out.push(Segment::control(IM_START));
                    out.push(Segment::text(format!("{role}\n{content}")));
                    out.push(Segment::control(IM_END));
                    out.push(Segment::text("\n".to_string()));
                };
                let has_system = messages.first().is_some_and(|m| m.role == "system");
                if let (false, Some(s)) = (has_system, default_system) {
                    turn("system", s);
                }
                for m in messages {
                    turn(&m.role, &m.content);
                }
                out.push(Segment::control(IM_START));
                out.push(Segment::text("assistant\n".to_string()));
                out
            }
        }
    }

    /// Text that ends an assistant turn (generation stops there).
    pub fn end_of_turn(&self) -> &'static str {
        match self {
            ChatTemplate::ChatMl { .. } => IM_END,
        }
    }
}

/// The literal system turn a ChatML template inserts when the conversation lacks one:
/// `'<|im_start|>system\n…<|im_end|>` inside a Jinja string (newline escaped or not).
fn default_system(source: &str) -> Option<String> {
    let start = format!("{IM_START}system");
    let mut rest = source;
    while let Some(i) = rest.find(&start) {
        let after = &rest[i + start.len()..];
        let body = after
            .strip_prefix("\\n")
            .or_else(|| after.strip_prefix('\n'))?;
        // `<|im_start|>system\n' + message['content']` is the template copying a given system
        // message, not a default one: a default is a literal that runs to `<|im_end|>`.
        if let Some(end) = body.find(IM_END) {
            let text = &body[..end];
            if !text.contains('\'') && !text.contains('"') && !text.contains("{{") {
                return Some(text.replace("\\n", "\n"));
            }
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_smollm2_like_transformers() {
        let t = ChatTemplate::from_jinja(SMOLLM2).unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "Hi")]),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&[
                Message::new("system", "Be brief."),
                Message::new("user", "Hi")
            ]),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn a_template_without_default_system_and_an_unknown_one() {
        let plain = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}";
        assert_eq!(
            ChatTemplate::from_jinja(plain).unwrap(),
            ChatTemplate::ChatMl {
                default_system: None
            }
        );
        let llama =
            "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}";
        assert!(
            ChatTemplate::from_jinja(llama)
                .unwrap_err()
                .to_string()
                .contains("not ChatML")
        );
    }
}
