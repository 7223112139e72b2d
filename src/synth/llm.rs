//! The LLM client every generating stage shares. It sends chat or completion requests to an
//! OpenAI-compatible endpoint (`backend: openai`) or to grist's own batched inference
//! (`backend: local`), many at once, and never asks twice for what it has already been answered:
//! each answer is stored in the request cache under the hash of the exact request body before
//! the caller sees it.
//!
//! Failures are retried with exponential backoff and jitter: connection errors, timeouts, HTTP
//! 408, 409, 429 and 5xx, and 200 answers that are not a valid completion (a proxy cutting the
//! body). `Retry-After` (seconds) and `retry-after-ms` are honoured. Other 4xx are not retried.
//! A request that still fails comes back as an [`LlmError`] whose [`LlmError::reason`] becomes
//! the item's rejection reason. Always `n: 1`: llama.cpp and Ollama reject more, so callers fan
//! out requests instead.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::chat::Message;
use super::local::{EngineOptions, GenParams, LocalEngine, ServedModel};
use crate::error::{GristError, Result};

/// Where completions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// An OpenAI-compatible HTTP endpoint (OpenAI, vLLM, llama.cpp, Ollama, `grist serve`).
    Openai,
    /// grist's own inference on a checkpoint or GGUF file, in this process.
    Local,
}

/// Which endpoint prompts go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `/v1/chat/completions`: each prompt is one user message (the model's chat template
    /// applies).
    Chat,
    /// `/v1/completions`: the prompt text is continued as it is (Self-Instruct's original
    /// setting, with a base model).
    Completions,
}

/// The `llm` block of a generating stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub backend: Backend,
    /// `openai`: the model name sent with each request. `local`: the checkpoint directory or
    /// `.gguf` file to run.
    pub model: String,
    /// `openai`: the endpoint's base URL, up to and including `/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `openai`: the environment variable holding the API key (sent as a bearer token, never
    /// logged or stored). Unset: no `Authorization` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(default = "default_api")]
    pub api: Api,
    /// Requests in flight at once (`local`: sequences decoded together).
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Seconds each phase of an attempt may take: connecting, sending, waiting for the answer
    /// to start, reading it.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Attempts after the first.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// First backoff in seconds; it doubles per retry up to `max_backoff_s`, times a random
    /// factor in [0.75, 1].
    #[serde(default = "default_backoff")]
    pub backoff_s: f64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_s: f64,
    /// Requests started per minute at most (unset: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<f64>,
}

fn default_api() -> Api {
    Api::Chat
}
fn default_concurrency() -> usize {
    8
}
fn default_timeout() -> f64 {
    600.0
}
fn default_retries() -> u32 {
    6
}
fn default_backoff() -> f64 {
    1.0
}
fn default_max_backoff() -> f64 {
    60.0
}

/// Bounds of the `llm` block's numbers: past them a value is a typo, and some would overflow a
/// `Duration` at run time.
const MAX_SECONDS: f64 = 86_400.0;
const MAX_CONCURRENCY: usize = 4096;
const MAX_RETRIES: u32 = 100;
const MIN_RPM: f64 = 0.01;
const MAX_RPM: f64 = 1e7;
/// The longest wait a server's `Retry-After` / `retry-after-ms` may ask for; longer asks fall
/// back to our own backoff, as OpenAI's client does.
const MAX_RETRY_AFTER_S: f64 = 60.0;

impl LlmConfig {
    /// Problems with the block, each naming its field. (Negated comparisons: NaN fails them.)
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.backend {
            Backend::Openai => match &self.base_url {
                None => out.push("llm.base_url: `backend: openai` needs a base URL (e.g. http://127.0.0.1:8000/v1)".into()),
                Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                    out.push(format!("llm.base_url: `{u}` is not an http:// or https:// URL"))
                }
                _ => {}
            },
            Backend::Local => {
                if self.base_url.is_some() {
                    out.push("llm.base_url: `backend: local` runs the model in-process; drop base_url or use `backend: openai`".into());
                }
            }
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.max_concurrency) {
            out.push(format!(
                "llm.max_concurrency: {} is not in 1..={MAX_CONCURRENCY}",
                self.max_concurrency
            ));
        }
        let seconds = |name: &str, v: f64, min: f64, max: f64, out: &mut Vec<String>| {
            if !(v.is_finite() && v >= min && v <= max) {
                out.push(format!(
                    "llm.{name}: {v} is not a number of seconds in [{min}, {max}]"
                ));
            }
        };
        if !(self.timeout_s > 0.0) {
            out.push(format!(
                "llm.timeout_s: {} must be positive",
                self.timeout_s
            ));
        } else {
            seconds("timeout_s", self.timeout_s, 0.0, MAX_SECONDS, &mut out);
        }
        seconds("backoff_s", self.backoff_s, 0.0, MAX_SECONDS, &mut out);
        seconds(
            "max_backoff_s",
            self.max_backoff_s,
            0.0,
            MAX_SECONDS,
            &mut out,
        );
        if self.backoff_s > self.max_backoff_s {
            out.push("llm.backoff_s: must be ≤ max_backoff_s".into());
        }
        if self.max_retries > MAX_RETRIES {
            out.push(format!(
                "llm.max_retries: {} is more than {MAX_RETRIES}",
                self.max_retries
            ));
        }
        if let Some(r) = self.requests_per_minute
            && !(r.is_finite() && (MIN_RPM..=MAX_RPM).contains(&r))
        {
            out.push(format!(
                "llm.requests_per_minute: {r} is not in [{MIN_RPM}, {MAX_RPM}]"
            ));
        }
        out
    }

    /// The model the rows record as their generator.
    pub fn generator(&self) -> String {
        match self.backend {
            Backend::Openai => self.model.clone(),
            Backend::Local => Path::new(&self.model)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.model.clone()),
        }
    }
}

/// One request: a prompt (sent as the `api` says) and its sampling parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    /// For `api: chat`, the messages; for `api: completions` their contents joined.
    pub messages: Vec<Message>,
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub stop: Vec<String>,
    pub seed: u64,
}

impl LlmRequest {
    /// The prompt `api: completions` sends: the messages' contents, blank-line separated.
    pub fn prompt_text(&self) -> String {
        let text: Vec<&str> = self.messages.iter().map(|m| m.content.as_str()).collect();
        text.join("\n\n")
    }

    /// A single user message.
    pub fn user(prompt: impl Into<String>) -> LlmRequest {
        LlmRequest {
            messages: vec![Message::new("user", prompt)],
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmResponse {
    pub text: String,
    /// `stop`, or `length` when the answer was cut by `max_tokens` (callers record it).
    pub finish_reason: String,
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// The request body's hash (the cache key and the rows' `prompt_hash`).
    pub key: String,
}

/// Why a request failed for good.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    #[error("HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("timed out")]
    Timeout,
    #[error("connection: {0}")]
    Connection(String),
    #[error("not a completion: {0}")]
    Malformed(String),
    #[error("{0}")]
    Local(String),
}

impl LlmError {
    /// The rejection reason of an item whose request failed.
    pub fn reason(&self) -> String {
        match self {
            LlmError::Http { status, .. } => format!("llm_http_{status}"),
            LlmError::Timeout => "llm_timeout".into(),
            LlmError::Connection(_) => "llm_connection".into(),
            LlmError::Malformed(_) => "llm_malformed_response".into(),
            LlmError::Local(_) => "llm_local_error".into(),
        }
    }

    fn retryable(&self) -> bool {
        match self {
            LlmError::Http { status, .. } => {
                matches!(status, 408 | 409 | 429) || (500..600).contains(status)
            }
            LlmError::Timeout | LlmError::Connection(_) | LlmError::Malformed(_) => true,
            LlmError::Local(_) => false,
        }
    }
}

/// Counters over a client's life.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub requests: AtomicU64,
    pub cache_hits: AtomicU64,
    pub retries: AtomicU64,
    pub failures: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub cut_by_length: AtomicU64,
}

impl ClientStats {
    /// The counters as stage metrics (`llm_requests`, ...).
    pub fn metrics(&self) -> Vec<(String, f64)> {
        [
            ("llm_requests", &self.requests),
            ("llm_cache_hits", &self.cache_hits),
            ("llm_retries", &self.retries),
            ("llm_failures", &self.failures),
            ("llm_prompt_tokens", &self.prompt_tokens),
            ("llm_completion_tokens", &self.completion_tokens),
            ("llm_cut_by_length", &self.cut_by_length),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed) as f64))
        .collect()
    }
}

enum Transport {
    Http {
        agent: ureq::Agent,
        url_chat: String,
        url_completions: String,
        api_key: Option<String>,
    },
    Local(LocalEngine),
}

/// Sends requests; see the module docs.
pub struct LlmClient {
    config: LlmConfig,
    transport: Transport,
    cache: Option<RequestCache>,
    next_start: Mutex<Instant>,
    pub stats: ClientStats,
}

impl LlmClient {
    /// A client; `cache_dir` holds answers across runs (none: no cache).
    pub fn new(config: &LlmConfig, cache_dir: Option<&Path>) -> Result<LlmClient> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(GristError::Usage(problems.join("; ")));
        }
        let transport = match config.backend {
            Backend::Openai => {
                let base = config
                    .base_url
                    .as_deref()
                    .expect("checked")
                    .trim_end_matches('/');
                let api_key = match &config.api_key_env {
                    Some(var) => Some(std::env::var(var).map_err(|_| {
                        GristError::Usage(format!(
                            "llm.api_key_env: the environment variable `{var}` is not set"
                        ))
                    })?),
                    None => None,
                };
                // Per-phase timeouts: ureq's global one costs ~5x in requests per second.
                let t = Some(Duration::from_secs_f64(config.timeout_s));
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_connect(t)
                    .timeout_send_request(t)
                    .timeout_send_body(t)
                    .timeout_recv_response(t)
                    .timeout_recv_body(t)
                    .http_status_as_error(false)
                    .max_idle_connections(config.max_concurrency.max(8) * 2)
                    .max_idle_connections_per_host(config.max_concurrency.max(8) * 2)
                    .build()
                    .into();
                Transport::Http {
                    agent,
                    url_chat: format!("{base}/chat/completions"),
                    url_completions: format!("{base}/completions"),
                    api_key,
                }
            }
            Backend::Local => {
                let model = ServedModel::load(Path::new(&config.model))?;
                Transport::Local(LocalEngine::start(
                    Arc::new(model),
                    EngineOptions {
                        max_batch: config.max_concurrency,
                        ..Default::default()
                    },
                ))
            }
        };
        Ok(LlmClient {
            config: config.clone(),
            transport,
            cache: cache_dir.map(RequestCache::new).transpose()?,
            next_start: Mutex::new(Instant::now()),
            stats: ClientStats::default(),
        })
    }

    /// The JSON body of `req`: what is sent (`openai`) and what is hashed (both backends).
    pub fn body(&self, req: &LlmRequest) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
            "n": 1,
        });
        match self.config.api {
            Api::Chat => body["messages"] = json!(req.messages),
            Api::Completions => body["prompt"] = json!(req.prompt_text()),
        }
        if !req.stop.is_empty() {
            body["stop"] = json!(req.stop);
        }
        body
    }

    /// Answers every request (same order), `max_concurrency` at a time.
    pub fn complete_all(
        &self,
        reqs: &[LlmRequest],
    ) -> Vec<std::result::Result<LlmResponse, LlmError>> {
        let next = AtomicUsize::new(0);
        let results: Vec<Mutex<Option<std::result::Result<LlmResponse, LlmError>>>> =
            reqs.iter().map(|_| Mutex::new(None)).collect();
        let workers = self.config.max_concurrency.min(reqs.len()).max(1);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= reqs.len() {
                            break;
                        }
                        let r = self.complete(&reqs[i]);
                        *results[i].lock().expect("result slot") = Some(r);
                    }
                });
            }
        });
        results
            .into_iter()
            .map(|m| m.into_inner().expect("result slot").expect("answered"))
            .collect()
    }

    /// Answers one request: from the cache, or asked (with retries) and then cached.
    pub fn complete(&self, req: &LlmRequest) -> std::result::Result<LlmResponse, LlmError> {
        let body = serde_json::to_vec(&self.body(req)).expect("json");
        let key = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&body));
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        let mut attempt = 0u32;
        loop {
            self.wait_for_rate_limit();
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let (result, retry_after) = self.attempt(req, &body, &key);
            match result {
                Ok(resp) => {
                    self.stats
                        .prompt_tokens
                        .fetch_add(resp.prompt_tokens, Ordering::Relaxed);
                    self.stats
                        .completion_tokens
                        .fetch_add(resp.completion_tokens, Ordering::Relaxed);
                    if resp.finish_reason == "length" {
                        self.stats.cut_by_length.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(c) = &self.cache
                        && let Err(e) = c.put(&key, &resp)
                    {
                        tracing::warn!("request cache: {e}");
                    }
                    crate::util::hook::checkpoint("llm_response");
                    return Ok(resp);
                }
                Err(e) if e.retryable() && attempt < self.config.max_retries => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let delay = retry_after.unwrap_or_else(|| self.backoff(attempt, &key));
                    tracing::debug!("retrying after {e} in {delay:?}");
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    }

    /// Exponential backoff times a jitter factor in [0.75, 1] (as OpenAI's client does),
    /// derived from the key and attempt so no global RNG is involved.
    fn backoff(&self, attempt: u32, key: &str) -> Duration {
        let base =
            (self.config.backoff_s * 2f64.powi(attempt as i32)).min(self.config.max_backoff_s);
        let h =
            xxhash_rust::xxh3::xxh3_64(format!("{key}:{attempt}:{:?}", Instant::now()).as_bytes());
        let jitter = 1.0 - 0.25 * (h >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(base * jitter)
    }

    fn wait_for_rate_limit(&self) {
        let Some(rpm) = self.config.requests_per_minute else {
            return;
        };
        let interval = Duration::from_secs_f64(60.0 / rpm);
        let start = {
            let mut next = self.next_start.lock().expect("rate limit lock");
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + interval;
            start
        };
        let now = Instant::now();
        if start > now {
            std::thread::sleep(start - now);
        }
    }

    /// One attempt; on failure, the delay the server asked for, if any.
    fn attempt(
        &self,
        req: &LlmRequest,
        body: &[u8],
        key: &str,
    ) -> (std::result::Result<LlmResponse, LlmError>, Option<Duration>) {
        match &self.transport {
            Transport::Local(engine) => (self.local(engine, req, key), None),
            Transport::Http {
                agent,
                url_chat,
                url_completions,
                api_key,
            } => {
                let url = match self.config.api {
                    Api::Chat => url_chat,
                    Api::Completions => url_completions,
                };
                let mut r = agent.post(url).header("Content-Type", "application/json");
                if let Some(k) = api_key {
                    r = r.header("Authorization", format!("Bearer {k}"));
                }
                let resp = match r.send(body) {
                    Ok(resp) => resp,
                    Err(e) => return (Err(transport_error(e)), None),
                };
                let status = resp.status().as_u16();
                let retry_after = retry_after(resp.headers());
                let text = match resp.into_body().read_to_string() {
                    Ok(t) => t,
                    Err(e) => return (Err(transport_error(e)), retry_after),
                };
                if status != 200 {
                    let body: String = text.chars().take(300).collect();
                    return (Err(LlmError::Http { status, body }), retry_after);
                }
                (parse_response(&text, self.config.api, key), None)
            }
        }
    }

    fn local(
        &self,
        engine: &LocalEngine,
        req: &LlmRequest,
        key: &str,
    ) -> std::result::Result<LlmResponse, LlmError> {
        let local = |e: super::local::EngineError| LlmError::Local(e.to_string());
        let prompt = match self.config.api {
            Api::Chat => engine.model.encode_chat(&req.messages).map_err(local)?,
            Api::Completions => engine.model.encode(&req.prompt_text()).map_err(local)?,
        };
        let params = GenParams {
            max_tokens: req.max_tokens,
            temperature: req.temperature,
            top_p: req.top_p,
            stop: req.stop.clone(),
            seed: req.seed,
        };
        let c = engine
            .complete_ids(prompt, params, &|| false)
            .map_err(local)?;
        Ok(LlmResponse {
            text: c.text,
            finish_reason: c.finish.as_str().into(),
            prompt_tokens: c.prompt_tokens as u64,
            completion_tokens: c.completion_tokens as u64,
            key: key.into(),
        })
    }
}

fn transport_error(e: ureq::Error) -> LlmError {
    match e {
        ureq::Error::Timeout(_) => LlmError::Timeout,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => LlmError::Timeout,
        other => LlmError::Connection(other.to_string()),
    }
}

/// `retry-after-ms` or `Retry-After` in seconds (an HTTP date is not read).
fn retry_after(headers: &ureq::http::HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    // Like OpenAI's client, ignore absurd waits (in either header) and fall back to backoff.
    let seconds = get("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| get("retry-after"))?;
    (seconds <= MAX_RETRY_AFTER_S)
        .then(|| Duration::try_from_secs_f64(seconds).ok())
        .flatten()
}

/// The text of an OpenAI chat or completion answer.
pub fn parse_response(
    text: &str,
    api: Api,
    key: &str,
) -> std::result::Result<LlmResponse, LlmError> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| LlmError::Malformed(format!("not JSON: {e}")))?;
    let choice = v["choices"]
        .get(0)
        .ok_or_else(|| LlmError::Malformed("no `choices[0]`".into()))?;
    let content = match api {
        Api::Chat => &choice["message"]["content"],
        Api::Completions => &choice["text"],
    };
    let text = content
        .as_str()
        .ok_or_else(|| LlmError::Malformed("the choice has no text".into()))?;
    Ok(LlmResponse {
        text: text.to_string(),
        finish_reason: choice["finish_reason"]
            .as_str()
            .unwrap_or("stop")
            .to_string(),
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        key: key.into(),
    })
}

/// Answers on disk, one file per request hash (`<dir>/<2 hex>/<hash>.json`), each written under
/// a temporary name and renamed: a killed run leaves whole answers or none.
pub struct RequestCache {
    dir: PathBuf,
}

impl RequestCache {
    pub fn new(dir: &Path) -> Result<RequestCache> {
        std::fs::create_dir_all(dir).map_err(|e| GristError::io(dir, e))?;
        Ok(RequestCache {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.json"))
    }

    pub fn get(&self, key: &str) -> Option<LlmResponse> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn put(&self, key: &str, resp: &LlmResponse) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().expect("sharded");
        std::fs::create_dir_all(dir).map_err(|e| GristError::io(dir, e))?;
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(resp).expect("json"))
            .map_err(|e| GristError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| GristError::io(&path, e))
    }

    /// The keys answered so far.
    pub fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        for shard in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some(k) = name.strip_suffix(".json")
                    && !name.starts_with('.')
                {
                    out.push(k.to_string());
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LlmConfig {
        serde_json::from_value(
            json!({"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}),
        )
        .unwrap()
    }

    #[test]
    fn defaults_and_problems() {
        let c = config();
        assert_eq!((c.api, c.max_concurrency, c.max_retries), (Api::Chat, 8, 6));
        assert!(c.problems().is_empty());
        let bad: LlmConfig = serde_json::from_value(
            json!({"backend": "openai", "model": "m", "max_concurrency": 0, "requests_per_minute": -1.0}),
        )
        .unwrap();
        let p = bad.problems().join("\n");
        assert!(
            p.contains("llm.base_url")
                && p.contains("llm.max_concurrency")
                && p.contains("requests_per_minute"),
            "{p}"
        );
    }

    /// Issue 16, item 2: a server controls these headers; absurd waits fall back to backoff
    /// instead of panicking (`1e30` ms) or sleeping for years (`1e11` ms).
    #[test]
    fn i02_absurd_retry_after_headers_fall_back_to_backoff() {
        let wait = |name: &str, value: &str| {
            let mut h = ureq::http::HeaderMap::new();
            h.insert(
                ureq::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
            retry_after(&h)
        };
        assert_eq!(
            wait("retry-after-ms", "1500"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(wait("retry-after", "2"), Some(Duration::from_secs(2)));
        for (name, v) in [
            ("retry-after-ms", "1e30"),
            ("retry-after-ms", "100000000000"),
            ("retry-after-ms", "-5"),
            ("retry-after-ms", "NaN"),
            ("retry-after-ms", "inf"),
            ("retry-after", "1e30"),
            ("retry-after", "61"),
            ("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ] {
            assert_eq!(wait(name, v), None, "{name}: {v}");
        }
    }

    /// Issue 16, item 3: numbers that would overflow a `Duration` at run time are config errors
    /// naming the field.
    #[test]
    fn i03_absurd_llm_numbers_are_config_errors() {
        type Set = fn(&mut LlmConfig);
        let cases: [(&str, Set); 9] = [
            ("timeout_s", |c| c.timeout_s = f64::INFINITY),
            ("timeout_s", |c| c.timeout_s = 1e30),
            ("timeout_s", |c| c.timeout_s = f64::NAN),
            ("requests_per_minute", |c| {
                c.requests_per_minute = Some(1e-300)
            }),
            ("backoff_s", |c| {
                c.backoff_s = 1e20;
                c.max_backoff_s = 1e30
            }),
            ("max_backoff_s", |c| c.max_backoff_s = 1e30),
            ("backoff_s", |c| c.backoff_s = -1.0),
            ("max_concurrency", |c| c.max_concurrency = 1_000_000_000),
            ("max_retries", |c| c.max_retries = 4_000_000_000),
        ];
        for (field, set) in cases {
            let mut c = config();
            set(&mut c);
            let p = c.problems().join("; ");
            assert!(p.contains(&format!("llm.{field}")), "{field}: {p:?}");
            assert!(LlmClient::new(&c, None).is_err());
        }
    }

    #[test]
    fn parses_answers_and_rejects_malformed_ones() {
        let chat = r#"{"choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        let r = parse_response(chat, Api::Chat, "k").unwrap();
        assert_eq!(
            (r.text.as_str(), r.finish_reason.as_str(), r.prompt_tokens),
            ("hi", "length", 3)
        );
        let comp = r#"{"choices":[{"text":" there","finish_reason":"stop"}]}"#;
        assert_eq!(
            parse_response(comp, Api::Completions, "k").unwrap().text,
            " there"
        );
        for bad in ["{\"choices\":[", "{}", r#"{"choices":[{"message":{}}]}"#] {
            assert!(
                matches!(
                    parse_response(bad, Api::Chat, "k"),
                    Err(LlmError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn retry_classes() {
        for s in [408, 409, 429, 500, 503] {
            assert!(
                LlmError::Http {
                    status: s,
                    body: String::new()
                }
                .retryable(),
                "{s}"
            );
        }
        for s in [400, 401, 404, 422] {
            assert!(
                !LlmError::Http {
                    status: s,
                    body: String::new()
                }
                .retryable(),
                "{s}"
            );
        }
        assert_eq!(LlmError::Timeout.reason(), "llm_timeout");
    }

    #[test]
    fn the_cache_round_trips_and_lists_keys() {
        let dir = tempfile::tempdir().unwrap();
        let c = RequestCache::new(dir.path()).unwrap();
        let r = LlmResponse {
            text: "x".into(),
            finish_reason: "stop".into(),
            prompt_tokens: 1,
            completion_tokens: 2,
            key: "ab12".into(),
        };
        assert!(c.get("ab12").is_none());
        c.put("ab12", &r).unwrap();
        assert_eq!(c.get("ab12"), Some(r));
        assert_eq!(c.keys(), vec!["ab12".to_string()]);
    }

    #[test]
    fn bodies_are_canonical_and_always_ask_for_one_choice() {
        let client = LlmClient::new(&config(), None).unwrap();
        let mut req = LlmRequest::user("hello");
        req.stop = vec!["\n\n".into()];
        let b = client.body(&req);
        assert_eq!(b["n"], 1);
        assert_eq!(b["messages"][0]["content"], "hello");
        assert_eq!(
            serde_json::to_vec(&b).unwrap(),
            serde_json::to_vec(&client.body(&req)).unwrap()
        );
    }

    /// Fuzz (issue 16): whatever an endpoint answers (mutated chat and completion bodies,
    /// random bytes, any `Retry-After` value) becomes an answer or a malformed-answer error;
    /// never a panic, never a wait past the cap.
    #[test]
    fn fuzz_endpoint_answers() {
        let seeds = vec![
            json!({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
            json!({"choices": [{"text": " there", "finish_reason": "length", "logprobs": null}], "usage": {"prompt_tokens": 2}}),
        ];
        crate::fuzz::fuzz(
            "llm answers",
            3000,
            crate::fuzz::json_inputs(seeds),
            |bytes| {
                let text = String::from_utf8_lossy(&bytes);
                let (_, peak) = crate::fuzz::peak_bytes(|| {
                    for api in [Api::Chat, Api::Completions] {
                        if let Err(e) = parse_response(&text, api, "k")
                            && e.reason() != "llm_malformed_response"
                        {
                            panic!("{e:?}");
                        }
                    }
                });
                crate::fuzz::within(
                    "llm answers",
                    peak,
                    64 * bytes.len() + (64 << 10),
                    bytes.len(),
                )
            },
        );
        crate::fuzz::fuzz(
            "retry-after",
            3000,
            crate::fuzz::inputs(vec![b"1500".to_vec(), b"2.5".to_vec(), b"1e30".to_vec()]),
            |bytes| {
                let Ok(value) = ureq::http::HeaderValue::from_bytes(&bytes) else {
                    return Ok(());
                };
                for name in ["retry-after-ms", "retry-after"] {
                    let mut h = ureq::http::HeaderMap::new();
                    h.insert(ureq::http::HeaderName::from_static(name), value.clone());
                    if let Some(d) = retry_after(&h)
                        && d > Duration::from_secs_f64(MAX_RETRY_AFTER_S)
                    {
                        return Err(format!("{name}: {value:?} waits {d:?}"));
                    }
                }
                Ok(())
            },
        );
    }
}
