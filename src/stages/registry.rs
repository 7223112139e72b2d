//! Stage type name → config type. Adding a stage: one line in [`all`].

use schemars::generate::SchemaSettings;
use serde_json::Value as Json;

use super::c4_quality::C4Quality;
use super::classifier_train::ClassifierTrain;
use super::evol_instruct::EvolInstruct;
use super::exact_dedup::ExactDedup;
use super::fineweb_quality::FinewebQuality;
use super::gopher_quality::GopherQuality;
use super::gopher_repetition::GopherRepetition;
use super::langid::Langid;
use super::minhash_dedup::MinhashDedup;
use super::mix::Mix;
use super::quality_classifier::QualityClassifier;
use super::read_jsonl::ReadJsonl;
use super::read_parquet::ReadParquet;
use super::read_text::ReadText;
use super::self_instruct::SelfInstruct;
use super::sql::Sql;
use super::tokenize::Tokenize;
use super::tokenizer_train::TokenizerTrain;
use super::write_jsonl::WriteJsonl;
use super::write_parquet::WriteParquet;
use super::{DynStageConfig, StageConfig, StageKind};
use crate::config::de::{DeError, from_node};
use crate::config::yaml::Node;
use crate::train::TrainConfig;

#[derive(Clone, Copy)]
pub struct StageType {
    pub name: &'static str,
    pub kind: StageKind,
    /// See [`StageConfig::READS_ROWS`].
    pub reads_rows: bool,
    /// JSON Schema of the stage's parameters (doc comments become descriptions).
    pub schema: fn() -> Json,
    pub parse: fn(&Node) -> Result<Box<dyn DynStageConfig>, DeError>,
}

fn entry<C: StageConfig + std::fmt::Debug>() -> StageType {
    StageType {
        name: C::TYPE,
        kind: C::KIND,
        reads_rows: C::READS_ROWS,
        schema: || {
            let schema = SchemaSettings::draft2020_12()
                .into_generator()
                .into_root_schema_for::<C>();
            serde_json::to_value(schema).expect("schemas serialize")
        },
        parse: |node| Ok(Box::new(from_node::<C>(node)?)),
    }
}

/// Every stage type, in the order `grist stages` lists them.
pub fn all() -> Vec<StageType> {
    vec![
        entry::<ReadParquet>(),
        entry::<ReadJsonl>(),
        entry::<ReadText>(),
        entry::<Sql>(),
        entry::<Langid>(),
        entry::<GopherRepetition>(),
        entry::<GopherQuality>(),
        entry::<C4Quality>(),
        entry::<FinewebQuality>(),
        entry::<QualityClassifier>(),
        entry::<ClassifierTrain>(),
        entry::<ExactDedup>(),
        entry::<MinhashDedup>(),
        entry::<TokenizerTrain>(),
        entry::<Tokenize>(),
        entry::<Mix>(),
        entry::<SelfInstruct>(),
        entry::<EvolInstruct>(),
        entry::<TrainConfig>(),
        entry::<WriteParquet>(),
        entry::<WriteJsonl>(),
    ]
}

pub fn get(name: &str) -> Option<StageType> {
    all().into_iter().find(|t| t.name == name)
}

impl StageType {
    /// Parameter names, in declaration order.
    pub fn param_names(&self) -> Vec<String> {
        match (self.schema)().get("properties") {
            Some(Json::Object(props)) => props.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The stage's doc comment, as one paragraph.
    pub fn description(&self) -> String {
        let schema = (self.schema)();
        let text = schema
            .get("description")
            .and_then(Json::as_str)
            .unwrap_or("");
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// First sentence of the description.
    pub fn summary(&self) -> String {
        let d = self.description();
        let first = d.split(". ").next().unwrap_or("").trim_end_matches('.');
        format!("{first}.")
    }
}
