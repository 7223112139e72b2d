//! Synthetic instruction data: the LLM client every generating stage shares ([`llm`]), grist's
//! own batched inference ([`local`]) and the OpenAI-compatible server over it ([`serve`]), chat
//! templates ([`chat`]), ROUGE-L as `rouge_score` computes it ([`rouge`]), and the algorithms of
//! the `self_instruct` and `evol_instruct` stages ([`self_instruct`], [`evol_instruct`]).

pub mod chat;
pub mod evol_instruct;
pub mod http;
pub mod llm;
pub mod local;
pub mod rouge;
pub mod rows;
pub mod self_instruct;
pub mod serve;
