//! Stage type name → config type: how a pipeline file's `type:` finds the stage's parameters.
//! Adding a stage: one line in [`all`].

use schemars::generate::SchemaSettings;
use serde_json::Value as Json;

use super::de::{DeError, from_node};
use super::yaml::Node;
use crate::stages::c4_quality::C4Quality;
use crate::stages::classifier_train::ClassifierTrain;
use crate::stages::evol_instruct::EvolInstruct;
use crate::stages::exact_dedup::ExactDedup;
use crate::stages::fineweb_quality::FinewebQuality;
use crate::stages::gopher_quality::GopherQuality;
use crate::stages::gopher_repetition::GopherRepetition;
use crate::stages::html_extract::HtmlExtract;
use crate::stages::langid::Langid;
use crate::stages::minhash_dedup::MinhashDedup;
use crate::stages::mix::Mix;
use crate::stages::pii::Pii;
use crate::stages::quality_classifier::QualityClassifier;
use crate::stages::read_jsonl::ReadJsonl;
use crate::stages::read_parquet::ReadParquet;
use crate::stages::read_text::ReadText;
use crate::stages::read_warc::ReadWarc;
use crate::stages::self_instruct::SelfInstruct;
use crate::stages::sql::Sql;
use crate::stages::tokenize::Tokenize;
use crate::stages::tokenizer_train::TokenizerTrain;
use crate::stages::url_filter::UrlFilter;
use crate::stages::write_jsonl::WriteJsonl;
use crate::stages::write_parquet::WriteParquet;
use crate::stages::{DynStageConfig, StageConfig, StageKind};
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
        entry::<ReadWarc>(),
        entry::<Sql>(),
        entry::<HtmlExtract>(),
        entry::<UrlFilter>(),
        entry::<Langid>(),
        entry::<GopherRepetition>(),
        entry::<GopherQuality>(),
        entry::<C4Quality>(),
        entry::<FinewebQuality>(),
        entry::<QualityClassifier>(),
        entry::<ClassifierTrain>(),
        entry::<ExactDedup>(),
        entry::<MinhashDedup>(),
        entry::<Pii>(),
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
