//! LLM client throughput against a stub endpoint that answers at once, at 64-way concurrency:
//! the client must not be the bottleneck. The same stub is driven by bare `ureq` calls from the
//! same number of threads (no JSON bodies built, no answers parsed, no retries), which is the
//! ceiling of this machine's loopback HTTP; the client's requests per second are reported
//! against it. `cargo bench --bench llm_client [-- REQUESTS CONCURRENCY]`.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use grist::synth::http::{self, HttpRequest, HttpResponse};
use grist::synth::llm::{LlmClient, LlmConfig, LlmRequest};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let requests = args.first().copied().unwrap_or(20_000);
    let concurrency = args.get(1).copied().unwrap_or(64);
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let answer = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
    std::thread::spawn(move || {
        http::run(
            l,
            Arc::new(move |_: &HttpRequest| HttpResponse {
                status: 200,
                body: answer.to_vec(),
            }),
        )
    });
    let url = format!("http://{addr}/v1");

    // Bare ureq from `concurrency` threads.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_idle_connections(concurrency * 2)
        .max_idle_connections_per_host(concurrency * 2)
        .build()
        .into();
    let next = AtomicUsize::new(0);
    let body = br#"{"model":"stub","messages":[{"role":"user","content":"hi"}]}"#;
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let r = agent
                        .post(format!("{url}/chat/completions"))
                        .send(&body[..])
                        .expect("stub answers");
                    r.into_body().read_to_string().expect("body");
                }
            });
        }
    });
    let bare = requests as f64 / started.elapsed().as_secs_f64();

    let config: LlmConfig = serde_json::from_value(serde_json::json!({
        "backend": "openai", "base_url": url, "model": "stub", "max_concurrency": concurrency,
    }))
    .expect("config");
    let client = LlmClient::new(&config, None).expect("client");
    let reqs: Vec<LlmRequest> = (0..requests)
        .map(|i| {
            let mut r = LlmRequest::user(format!("Write instruction number {i}."));
            r.seed = i as u64;
            r
        })
        .collect();
    let started = Instant::now();
    let answers = client.complete_all(&reqs);
    let through_client = requests as f64 / started.elapsed().as_secs_f64();
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(ok, requests, "every request answered");
    println!(
        "{}",
        serde_json::json!({
            "requests": requests, "concurrency": concurrency,
            "bare_ureq_requests_per_s": bare.round(),
            "client_requests_per_s": through_client.round(),
            "client_vs_bare": (through_client / bare * 1000.0).round() / 1000.0,
        })
    );
}
