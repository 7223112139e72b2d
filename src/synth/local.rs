//! grist's own inference behind `grist serve` and `backend: local`: a model (grist checkpoint or
//! GGUF file) with its tokenizer and chat template, and an engine thread that decodes every
//! request in flight together (continuous batching): each step, new requests bring their prompt
//! and running ones one token, through one forward pass. Prompts that share a long prefix with a
//! recent one (Self-Instruct's few-shot templates) reuse its keys and values.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokenizers::Tokenizer;

use super::chat::{ChatTemplate, Message};
use crate::error::{GristError, Result};
use crate::train::config::ModelConfig;
use crate::train::cpu::infer::{Forward, KvCache};
use crate::train::generate::{Finish, SamplingParams, sample};
use crate::train::params::Weights;
use crate::util::SplitMix64;

/// Why the engine did not complete a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The request itself is wrong (an HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The client went away; the request was dropped mid-way.
    #[error("the client closed the connection; the request was cancelled")]
    Cancelled,
    /// The engine failed on this request (an HTTP 500); it goes on serving the others.
    #[error("{0}")]
    Failed(String),
}

/// A model ready to serve.
pub struct ServedModel {
    /// Special-token strings of the tokenizer: in chat contents they are encoded as text.
    specials: Vec<String>,
    /// The tokenizer with special-token strings read as text (`encode_special_tokens`).
    ordinary: Tokenizer,
    /// The id clients name it by (`/v1/models`).
    pub name: String,
    pub config: ModelConfig,
    pub weights: Weights,
    pub tokenizer: Tokenizer,
    /// The chat template, or why chat is unavailable.
    pub chat: std::result::Result<ChatTemplate, String>,
    /// Tokens that end generation: EOS and the chat template's end-of-turn token.
    pub stop_ids: Vec<u32>,
}

impl ServedModel {
    /// Loads a grist checkpoint directory or a `.gguf` file.
    pub fn load(path: &Path) -> Result<ServedModel> {
        let (config, weights, tokenizer, template) = if path.is_dir() {
            let m = crate::train::checkpoint::load_model(path)?;
            let tok = m.tokenizer.ok_or_else(|| {
                GristError::data(
                    path,
                    "the checkpoint has no tokenizer.json; serving needs one",
                )
            })?;
            let tok = crate::tokens::encoder::load_tokenizer(&tok)?;
            (m.config, m.weights, tok, m.chat_template)
        } else if path.is_file() {
            let m = crate::train::gguf_import::read_gguf(path)?;
            let bytes = m.tokenizer.ok_or_else(|| {
                GristError::data(path, "the GGUF file has no tokenizer grist can rebuild")
            })?;
            let tok = crate::tokens::encoder::tokenizer_from_bytes(&bytes, path)?;
            (m.config, m.weights, tok, m.chat_template)
        } else {
            return Err(GristError::data(path, "no such checkpoint or GGUF file"));
        };
        let chat = match template {
            Some(t) => ChatTemplate::from_jinja(&t).map_err(|e| e.to_string()),
            None => Err("the model has no chat template; use /v1/completions".to_string()),
        };
        let mut stop_ids: Vec<u32> = config.eos_token_id.into_iter().collect();
        if let Ok(t) = &chat
            && let Some(id) = tokenizer.token_to_id(t.end_of_turn())
            && !stop_ids.contains(&id)
        {
            stop_ids.push(id);
        }
        // A token the model has no embedding row for (an added pad token, a mismatched pair)
        // is refused per request when a prompt holds it; say so once here.
        if let Some(max) = tokenizer.get_vocab(true).into_values().max()
            && max as usize >= config.vocab_size
        {
            tracing::warn!(
                "{}: the tokenizer has token id {max}, past the model's vocabulary of {}: prompts holding such tokens are refused",
                path.display(),
                config.vocab_size
            );
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "grist".into());
        let specials = tokenizer
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| t.special)
            .map(|t| t.content)
            .collect();
        let mut ordinary = tokenizer.clone();
        ordinary.set_encode_special_tokens(true);
        Ok(ServedModel {
            specials,
            ordinary,
            name,
            config,
            weights,
            tokenizer,
            chat,
            stop_ids,
        })
    }

    /// Token ids of `text`, without added special tokens; special-token strings in it are the
    /// special tokens (a raw completion prompt controls its own format).
    pub fn encode(&self, text: &str) -> std::result::Result<Vec<u32>, EngineError> {
        encode_with(&self.tokenizer, text)
    }

    /// Token ids of a conversation: the template's control tokens are control tokens, and a
    /// special-token string inside a role or content is encoded as the text it is (as
    /// tiktoken's `encode_ordinary` does), so a message cannot close its turn and forge the
    /// next one. A conversation without such strings gets exactly the ids of its rendering.
    pub fn encode_chat(&self, messages: &[Message]) -> std::result::Result<Vec<u32>, EngineError> {
        let template = self
            .chat
            .as_ref()
            .map_err(|why| EngineError::Invalid(why.clone()))?;
        let segments = template.segments(messages);
        let forged = segments
            .iter()
            .any(|s| !s.control && self.specials.iter().any(|t| s.text.contains(t.as_str())));
        if !forged {
            return self.encode(&template.render(messages));
        }
        let mut ids = Vec::new();
        for s in &segments {
            match (s.control, self.tokenizer.token_to_id(&s.text)) {
                (true, Some(id)) => ids.push(id),
                (true, None) => ids.extend(self.encode(&s.text)?),
                (false, _) => ids.extend(encode_with(&self.ordinary, &s.text)?),
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }

    /// The prompt for a conversation, as text.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        match &self.chat {
            Ok(t) => Ok(t.render(messages)),
            Err(why) => Err(GristError::Usage(why.clone())),
        }
    }
}

fn encode_with(tok: &Tokenizer, text: &str) -> std::result::Result<Vec<u32>, EngineError> {
    Ok(tok
        .encode(text, false)
        .map_err(|e| EngineError::Invalid(format!("cannot tokenize the prompt: {e}")))?
        .get_ids()
        .to_vec())
}

/// How to sample one completion.
#[derive(Debug, Clone)]
pub struct GenParams {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// Generation stops before the first of these strings.
    pub stop: Vec<String>,
    pub seed: u64,
}

/// One finished completion.
#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    pub finish: Finish,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

struct Job {
    prompt: Vec<u32>,
    params: GenParams,
    reply: Sender<std::result::Result<Completion, EngineError>>,
    /// Set when the client went away: the engine drops the job at its next step.
    cancelled: Arc<AtomicBool>,
}

/// Engine settings.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Sequences decoded together at most.
    pub max_batch: usize,
    /// Recent prompts whose keys and values are kept for reuse by prompts sharing a prefix.
    pub prefix_cache: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_batch: 8,
            prefix_cache: 4,
        }
    }
}

/// The decoding thread and its queue.
pub struct LocalEngine {
    pub model: Arc<ServedModel>,
    queue: Mutex<Sender<Job>>,
}

impl LocalEngine {
    pub fn start(model: Arc<ServedModel>, opts: EngineOptions) -> LocalEngine {
        let (tx, rx) = mpsc::channel();
        let m = model.clone();
        std::thread::Builder::new()
            .name("grist-decode".into())
            .spawn(move || run_engine(&m, rx, opts))
            .expect("spawn the decoding thread");
        LocalEngine {
            model,
            queue: Mutex::new(tx),
        }
    }

    /// Completes `prompt` (text), waiting for the engine.
    pub fn complete(
        &self,
        prompt: &str,
        params: GenParams,
    ) -> std::result::Result<Completion, EngineError> {
        self.complete_ids(self.model.encode(prompt)?, params, &|| false)
    }

    /// Completes a prompt of token ids, waiting for the engine; gives up (and has the engine
    /// drop the request) as soon as `client_gone` says the client left.
    pub fn complete_ids(
        &self,
        prompt: Vec<u32>,
        params: GenParams,
        client_gone: &dyn Fn() -> bool,
    ) -> std::result::Result<Completion, EngineError> {
        let ctx = self.model.config.max_position_embeddings;
        let vocab = self.model.config.vocab_size;
        if prompt.is_empty() {
            return Err(EngineError::Invalid("the prompt is empty".into()));
        }
        if prompt.len() >= ctx {
            return Err(EngineError::Invalid(format!(
                "the prompt has {} tokens; the model's context is {ctx}",
                prompt.len()
            )));
        }
        if let Some(t) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(EngineError::Invalid(format!(
                "prompt token {t} is outside the model's vocabulary ({vocab})"
            )));
        }
        if params.max_tokens == 0 {
            return Err(EngineError::Invalid("max_tokens must be at least 1".into()));
        }
        let (reply, answer) = mpsc::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let job = Job {
            prompt,
            params,
            reply,
            cancelled: cancelled.clone(),
        };
        let stopped = || EngineError::Failed("the decoding thread has stopped".into());
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| stopped())?;
        loop {
            match answer.recv_timeout(CLIENT_CHECK) {
                Ok(result) => return result,
                Err(RecvTimeoutError::Timeout) => {
                    if client_gone() {
                        cancelled.store(true, Ordering::SeqCst);
                        return Err(EngineError::Cancelled);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(EngineError::Failed(
                        "the engine failed on this request (see the server's log); it goes on with others"
                            .into(),
                    ));
                }
            }
        }
    }
}

/// How often a waiting request looks whether its client is still there.
const CLIENT_CHECK: Duration = Duration::from_millis(200);

struct Active {
    job: Job,
    cache: KvCache,
    feed: Vec<u32>,
    prefilled: bool,
    ids: Vec<u32>,
    rng: SplitMix64,
    sampling: SamplingParams,
}

fn run_engine(model: &ServedModel, rx: Receiver<Job>, opts: EngineOptions) {
    let mut forward = Forward::new(&model.config, &model.weights);
    let mut prefixes: Vec<(Vec<u32>, KvCache)> = Vec::new();
    let mut active: Vec<Active> = Vec::new();
    loop {
        if active.is_empty() {
            match rx.recv() {
                Ok(job) => active.push(admit(model, job, &mut prefixes)),
                Err(_) => return,
            }
        }
        while active.len() < opts.max_batch.max(1) {
            match rx.try_recv() {
                Ok(job) => active.push(admit(model, job, &mut prefixes)),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        // Requests whose client left are dropped before they cost another step.
        active.retain(|a| !a.job.cancelled.load(Ordering::SeqCst));
        if active.is_empty() {
            continue;
        }
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            step(model, &mut forward, &mut active, &mut prefixes, opts)
        }));
        if let Err(payload) = step {
            // A bug: fail the requests in flight (dropping their reply channels tells each
            // waiter), forget what they left behind, and go on with the next ones.
            tracing::error!(
                "the decoding engine failed on {} request(s): {}",
                active.len(),
                crate::error::panic_message(payload.as_ref())
            );
            active.clear();
            prefixes.clear();
            forward = Forward::new(&model.config, &model.weights);
        }
    }
}

/// One forward pass over every active request, one sampled token each; finished ones answered.
fn step(
    model: &ServedModel,
    forward: &mut Forward,
    active: &mut Vec<Active>,
    prefixes: &mut Vec<(Vec<u32>, KvCache)>,
    opts: EngineOptions,
) {
    crate::util::hook::checkpoint("decode_step");
    let ctx = model.config.max_position_embeddings;
    let logits = {
        let tokens: Vec<Vec<u32>> = active.iter().map(|a| a.feed.clone()).collect();
        let token_refs: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
        let mut caches: Vec<&mut KvCache> = active.iter_mut().map(|a| &mut a.cache).collect();
        forward.run(&mut caches, &token_refs)
    };
    let mut k = 0;
    for logits in logits {
        let a = &mut active[k];
        if !a.prefilled {
            a.prefilled = true;
            remember_prefix(prefixes, a, opts.prefix_cache);
        }
        let next = sample(&logits, &a.sampling, &mut a.rng);
        a.ids.push(next);
        match finished(model, a, ctx) {
            Some((text, finish)) => {
                let a = active.remove(k);
                let done = Completion {
                    text,
                    finish,
                    prompt_tokens: a.job.prompt.len(),
                    completion_tokens: a.ids.len(),
                };
                let _ = a.job.reply.send(Ok(done));
            }
            None => {
                a.feed = vec![next];
                k += 1;
            }
        }
    }
}

/// Prompts shorter than this are not worth keeping for prefix reuse.
const MIN_PREFIX: usize = 64;

/// A new request as an active sequence; its completion is cut at the context's end
/// (`max_tokens` clamped to what is left).
fn admit(model: &ServedModel, job: Job, prefixes: &mut [(Vec<u32>, KvCache)]) -> Active {
    let ctx = model.config.max_position_embeddings;
    let p = &job.params;
    let sampling = SamplingParams {
        temperature: p.temperature,
        top_k: 0,
        top_p: p.top_p,
        max_new_tokens: p.max_tokens.min(ctx - job.prompt.len()),
        stop_ids: model.stop_ids.clone(),
        seed: p.seed,
    };
    // The longest shared prefix among recent prompts, leaving at least two tokens to feed: a
    // multi-token feed takes the same kernel as a whole prompt, so reuse changes no result.
    let best = prefixes
        .iter()
        .enumerate()
        .map(|(i, (toks, _))| {
            let common = toks
                .iter()
                .zip(&job.prompt)
                .take_while(|(a, b)| a == b)
                .count();
            (i, common.min(job.prompt.len().saturating_sub(2)))
        })
        .max_by_key(|&(_, n)| n);
    let (cache, start) = match best {
        Some((i, n)) if n >= MIN_PREFIX => {
            let mut c = prefixes[i].1.clone();
            c.truncate(n);
            (c, n)
        }
        _ => (KvCache::new(&model.config), 0),
    };
    Active {
        feed: job.prompt[start..].to_vec(),
        cache,
        prefilled: false,
        ids: Vec::new(),
        // The same stream as `grist generate`'s for the same seed.
        rng: SplitMix64(sampling.seed ^ 0x5a3b1e),
        sampling,
        job,
    }
}

fn remember_prefix(prefixes: &mut Vec<(Vec<u32>, KvCache)>, a: &Active, keep: usize) {
    if keep == 0 || a.job.prompt.len() < MIN_PREFIX {
        return;
    }
    prefixes.retain(|(t, _)| *t != a.job.prompt);
    if prefixes.len() >= keep {
        prefixes.remove(0);
    }
    prefixes.push((a.job.prompt.clone(), a.cache.clone()));
}

/// The text and finish reason when `a` is done.
fn finished(model: &ServedModel, a: &Active, ctx: usize) -> Option<(String, Finish)> {
    let last = *a.ids.last()?;
    if a.sampling.stop_ids.contains(&last) {
        return Some((model.decode(&a.ids), Finish::Stop));
    }
    let text = (!a.job.params.stop.is_empty()).then(|| model.decode(&a.ids));
    if let Some(text) = &text {
        let cut = a
            .job
            .params
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min();
        if let Some(cut) = cut {
            return Some((text[..cut].to_string(), Finish::Stop));
        }
    }
    if a.ids.len() >= a.sampling.max_new_tokens || a.job.prompt.len() + a.ids.len() >= ctx {
        return Some((text.unwrap_or_else(|| model.decode(&a.ids)), Finish::Length));
    }
    None
}
