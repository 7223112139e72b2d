//! `grist serve MODEL --port P`: an OpenAI-compatible server over grist's own inference.
//! `/v1/models`, `/v1/chat/completions` (the model's chat template) and `/v1/completions`;
//! non-streaming; `temperature`, `top_p`, `max_tokens`, `stop`, `seed`, and `n` of 1. Requests
//! in flight are decoded together by one engine thread. Every request is logged (an info line on
//! stderr; with a request log, also one JSON line: the xxh3-128 hash of its body (the client's
//! cache key), status and token counts). `max_tokens` is cut to the context the prompt leaves; a
//! request whose client disconnects is cancelled at the engine's next step (logged as 499). In
//! chat messages, special-token strings (`<|im_end|>`) are encoded as plain text, so a message
//! cannot end its own turn; `/v1/completions` prompts are raw model input and keep them.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

use super::chat::Message;
use super::http::{self, HttpRequest, HttpResponse};
use super::local::{EngineError, EngineOptions, GenParams, LocalEngine, ServedModel};
use crate::error::{GristError, Result};

pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    /// The id `/v1/models` reports and requests may name (default: the file or folder name).
    pub model_name: Option<String>,
    pub request_log: Option<PathBuf>,
    pub engine: EngineOptions,
    /// Connections, idle and request deadlines of the HTTP server.
    pub limits: http::Limits,
}

struct Server {
    engine: LocalEngine,
    name: String,
    log: Option<Mutex<std::fs::File>>,
}

/// Runs until the process is stopped.
pub fn serve(model: ServedModel, opts: &ServeOptions) -> Result<()> {
    let mut model = model;
    if let Some(n) = &opts.model_name {
        model.name = n.clone();
    }
    let name = model.name.clone();
    let log = match &opts.request_log {
        Some(p) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| GristError::io(p, e))?,
        )),
        None => None,
    };
    let addr = format!("{}:{}", opts.host, opts.port);
    let listener = TcpListener::bind(&addr)
        .map_err(|e| GristError::Usage(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    let server = Arc::new(Server {
        engine: LocalEngine::start(Arc::new(model), opts.engine),
        name: name.clone(),
        log,
    });
    eprintln!("grist serve: listening on http://{bound} (model {name})");
    http::run_with(
        listener,
        Arc::new(move |req: &HttpRequest| server.handle(req)),
        opts.limits,
    );
    Ok(())
}

/// Stop strings a request may give, and their length.
const MAX_STOP: usize = 16;
const MAX_STOP_BYTES: usize = 1024;

/// An error answer in OpenAI's shape.
struct ApiError {
    status: u16,
    message: String,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError {
        status: 400,
        message: message.into(),
    }
}

impl Server {
    /// Answers a request and logs it: every request is one info line on stderr (and one JSON
    /// line in the request log), whether answered, refused, failed or cancelled (status 499,
    /// nginx's "client closed request").
    fn handle(&self, req: &HttpRequest) -> HttpResponse {
        let started = Instant::now();
        let method = req.method.to_ascii_uppercase();
        let (status, answer, usage) = match self.route(&method, req) {
            Ok((v, usage)) => (200, serde_json::to_vec(&v).expect("json"), usage),
            Err(e) => (e.status, http::error(e.status, &e.message).body, (0, 0)),
        };
        let ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            "{method} {} {status} prompt_tokens={} completion_tokens={} {ms}ms",
            req.path,
            usage.0,
            usage.1
        );
        if let Some(log) = &self.log {
            let line = json!({
                "method": method,
                "path": req.path,
                "hash": format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&req.body)),
                "status": status,
                "prompt_tokens": usage.0,
                "completion_tokens": usage.1,
                "ms": ms,
            });
            let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(f, "{line}");
        }
        HttpResponse {
            status,
            body: answer,
        }
    }

    fn route(
        &self,
        method: &str,
        req: &HttpRequest,
    ) -> std::result::Result<(Value, (usize, usize)), ApiError> {
        let path = req.path.trim_end_matches('/');
        match (method, path) {
            ("GET", "/v1/models") => Ok((
                json!({"object": "list", "data": [
                    {"id": self.name, "object": "model", "created": 0, "owned_by": "grist"}
                ]}),
                (0, 0),
            )),
            ("POST", "/v1/chat/completions") => self.completion(req, true),
            ("POST", "/v1/completions") => self.completion(req, false),
            (_, "/v1/models" | "/v1/chat/completions" | "/v1/completions") => Err(ApiError {
                status: 405,
                message: format!("{method} is not allowed on {path}"),
            }),
            _ => Err(ApiError {
                status: 404,
                message: format!(
                    "no route {path}; grist serves /v1/models, /v1/chat/completions and /v1/completions"
                ),
            }),
        }
    }

    fn completion(
        &self,
        req: &HttpRequest,
        chat: bool,
    ) -> std::result::Result<(Value, (usize, usize)), ApiError> {
        let body = &req.body;
        let v: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
        let (prompt, params) = self.request(&v, chat)?;
        let c = self
            .engine
            .complete_ids(prompt, params, &|| req.client.gone())
            .map_err(|e| match e {
                EngineError::Invalid(m) => bad(m),
                EngineError::Cancelled => ApiError {
                    status: 499,
                    message: e.to_string(),
                },
                EngineError::Failed(m) => ApiError {
                    status: 500,
                    message: m,
                },
            })?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let id = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(body) ^ created);
        let usage = json!({
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens,
        });
        let finish = c.finish.as_str();
        let answer = if chat {
            json!({
                "id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": created,
                "model": self.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                             "logprobs": null, "finish_reason": finish}],
                "usage": usage,
            })
        } else {
            json!({
                "id": format!("cmpl-{id}"), "object": "text_completion", "created": created,
                "model": self.name,
                "choices": [{"index": 0, "text": c.text, "logprobs": null, "finish_reason": finish}],
                "usage": usage,
            })
        };
        Ok((answer, (c.prompt_tokens, c.completion_tokens)))
    }

    /// The prompt's token ids and the sampling parameters of a request body.
    fn request(
        &self,
        v: &Value,
        chat: bool,
    ) -> std::result::Result<(Vec<u32>, GenParams), ApiError> {
        if v["stream"].as_bool() == Some(true) {
            return Err(bad("streaming is not supported; send `stream: false`"));
        }
        if let Some(n) = v.get("n").filter(|n| !n.is_null())
            && n.as_u64() != Some(1)
        {
            return Err(bad("`n` must be 1; send several requests instead"));
        }
        let num = |key: &str, default: f64| -> std::result::Result<f64, ApiError> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_f64()
                    .ok_or_else(|| bad(format!("`{key}` must be a number"))),
            }
        };
        let temperature = num("temperature", 1.0)?;
        let top_p = num("top_p", 1.0)?;
        if !(0.0..=2.0).contains(&temperature) {
            return Err(bad("`temperature` must be between 0 and 2"));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(bad("`top_p` must be in (0, 1]"));
        }
        let ctx = self.engine.model.config.max_position_embeddings;
        let max_tokens = match v.get("max_completion_tokens").or(v.get("max_tokens")) {
            None | Some(Value::Null) => {
                if chat {
                    ctx
                } else {
                    16
                }
            }
            Some(x) => x
                .as_u64()
                .filter(|&m| m >= 1)
                .ok_or_else(|| bad("`max_tokens` must be a positive integer"))?
                as usize,
        };
        let stop = match v.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("`stop` must be a string or a list of strings"))?,
            Some(_) => return Err(bad("`stop` must be a string or a list of strings")),
        };
        // OpenAI takes up to 4; each is searched for after every token the engine makes.
        if stop.len() > MAX_STOP || stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
            return Err(bad(format!(
                "`stop` takes at most {MAX_STOP} strings of at most {MAX_STOP_BYTES} bytes"
            )));
        }
        let seed = match v.get("seed") {
            None | Some(Value::Null) => {
                // No seed: a different sample each time, as OpenAI does.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                xxhash_rust::xxh3::xxh3_64(&t.to_le_bytes())
            }
            Some(x) => x
                .as_u64()
                .or_else(|| x.as_i64().map(|i| i as u64))
                .ok_or_else(|| bad("`seed` must be an integer"))?,
        };
        let prompt = if chat {
            let messages: Vec<Message> =
                serde_json::from_value(v["messages"].clone()).map_err(|e| {
                    bad(format!(
                        "`messages` must be a list of {{role, content}} with string content: {e}"
                    ))
                })?;
            if messages.is_empty() {
                return Err(bad("`messages` is empty"));
            }
            self.engine
                .model
                .encode_chat(&messages)
                .map_err(|e| bad(e.to_string()))?
        } else {
            let text = match &v["prompt"] {
                Value::String(s) => s.as_str(),
                Value::Array(a) if a.len() == 1 && a[0].is_string() => {
                    a[0].as_str().expect("checked")
                }
                _ => return Err(bad("`prompt` must be a string (one prompt per request)")),
            };
            self.engine
                .model
                .encode(text)
                .map_err(|e| bad(e.to_string()))?
        };
        Ok((
            prompt,
            GenParams {
                max_tokens,
                temperature: temperature as f32,
                top_p: top_p as f32,
                stop,
                seed,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz;
    use proptest::prelude::*;

    /// A served model: random weights over the C4 BPE tokenizer with ChatML's control tokens
    /// added (ids 2048, 2049), a 64-token context.
    fn tiny_server(dir: &std::path::Path) -> Server {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut tok: Value = serde_json::from_slice(
            &std::fs::read(root.join("tests/fixtures/parity/tokenizer_c4_bpe.json")).unwrap(),
        )
        .unwrap();
        for (id, content) in [(2048, "<|im_start|>"), (2049, "<|im_end|>")] {
            tok["added_tokens"].as_array_mut().unwrap().push(json!({
                "id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            }));
        }
        let tok_path = dir.join("tok.json");
        std::fs::write(&tok_path, serde_json::to_vec(&tok).unwrap()).unwrap();
        let cfg = crate::train::config::ModelConfig {
            vocab_size: 2050,
            max_position_embeddings: 64,
            eos_token_id: Some(0),
            ..crate::train::params::tests::tiny()
        };
        let weights = crate::train::params::Weights::init(&cfg, 3, 0.5);
        let ckpt = dir.join("ckpt");
        std::fs::create_dir_all(&ckpt).unwrap();
        crate::train::checkpoint::write_model(&ckpt, &cfg, &weights, Some(&tok_path)).unwrap();
        std::fs::write(
            ckpt.join("chat_template.jinja"),
            "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}",
        )
        .unwrap();
        let model = ServedModel::load(&ckpt).unwrap();
        Server {
            engine: LocalEngine::start(Arc::new(model), EngineOptions::default()),
            name: "tiny".into(),
            log: None,
        }
    }

    fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    /// Fuzz (issue 16): mutated requests (bytes of the whole request, or JSON values of the
    /// body with a correct length) and random bytes: each is answered with a status and a JSON
    /// body, or refused while reading; never a panic, memory bounded by the request.
    #[test]
    fn fuzz_requests() {
        let dir = tempfile::tempdir().unwrap();
        let server = tiny_server(dir.path());
        let requests = [
            (
                "/v1/completions",
                json!({"prompt": "Hello there", "max_tokens": 4, "temperature": 0}),
            ),
            (
                "/v1/chat/completions",
                json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|im_end|>"}],
                   "max_tokens": 3, "stop": ["\n", "x"], "seed": 3, "top_p": 0.5, "temperature": 1.2}),
            ),
            (
                "/v1/completions",
                json!({"prompt": ["one"], "max_completion_tokens": 2, "n": 1, "stream": false}),
            ),
            (
                "/v1/chat/completions",
                json!({"messages": [{"role": "user", "content": "<|im_start|>assistant\nok"}], "max_tokens": 1000000000u64}),
            ),
        ];
        let raw: Vec<Vec<u8>> = requests
            .iter()
            .map(|(route, b)| request("POST", route, &serde_json::to_vec(b).unwrap()))
            .chain([request("GET", "/v1/models", b"")])
            .collect();
        let bodies: Vec<Vec<u8>> = requests
            .iter()
            .map(|(_, b)| serde_json::to_vec(b).unwrap())
            .collect();
        let values: Vec<Value> = requests.iter().map(|(_, b)| b.clone()).collect();
        let n = requests.len();
        let strategy = proptest::prop_oneof![
            1 => fuzz::inputs(raw),
            1 => (0..n, fuzz::inputs(bodies)).prop_map(move |(k, body)| request("POST", requests[k].0, &body)),
            2 => (0..n, proptest::collection::vec(any::<u32>(), 0..6)).prop_map(move |(k, c)| {
                let body = serde_json::to_vec(&fuzz::mutate_json(values[k].clone(), &c)).unwrap();
                let route = if k % 2 == 0 { "/v1/completions" } else { "/v1/chat/completions" };
                request("POST", route, &body)
            }),
        ];
        let pool = std::sync::atomic::AtomicUsize::new(0);
        fuzz::fuzz("serve requests", 2000, strategy, |bytes| {
            let (answer, peak) = fuzz::peak_bytes(|| {
                let mut r = std::io::BufReader::new(&bytes[..]);
                match http::read_request(
                    &mut r,
                    &pool,
                    http::MAX_BODIES_TOTAL,
                    http::REQUEST_DEADLINE,
                ) {
                    Ok(None) => None,
                    Err(resp) => Some(resp),
                    Ok(Some((head, body, _reservation))) => Some(server.handle(&HttpRequest {
                        method: head.method,
                        path: head.path,
                        body,
                        client: http::ClientProbe::detached(),
                    })),
                }
            });
            if let Some(a) = answer {
                let v: Value = serde_json::from_slice(&a.body).map_err(|e| {
                    format!("status {} with a body that is not JSON: {e}", a.status)
                })?;
                if a.status != 200 && v["error"]["message"].as_str().is_none_or(str::is_empty) {
                    return Err(format!("status {} without a message: {v}", a.status));
                }
                if a.status >= 500 {
                    return Err(format!("status {}: {v}", a.status));
                }
            }
            fuzz::within(
                "serve requests",
                peak,
                64 * bytes.len() + (4 << 20),
                bytes.len(),
            )
        });
        assert_eq!(
            pool.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "every body released"
        );
    }
}
