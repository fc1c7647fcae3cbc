//! What each target feeds its input to: the same calls the CLI and the
//! browser make on a file or a pasted text.

use std::path::Path;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use sqlora_core::adapter::Adapter;
use sqlora_core::constrain::SqlGrammar;
use sqlora_core::model::Model;
use sqlora_core::schema::{Schema, SchemaFormat, SpiderTables};
use sqlora_core::weights::{BaseFormat, GgufFile};

use crate::seeds;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A `.gguf` model file: header, metadata, tokenizer, tensors, one forward step.
    Gguf,
    /// `model.safetensors` of an HF checkpoint (with a fixed tiny `config.json`).
    Safetensors,
    /// An adapter folder: `adapter_config.json` and `adapter_model.safetensors`,
    /// applied to a tiny model.
    Adapter,
    /// Spider's `tables.json`.
    TablesJson,
    /// A pasted schema (CREATE TABLE statements or `table: col, col` lines).
    Schema,
    /// Model-written SQL: the checker and the decoding grammar over a schema.
    Sql,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Gguf,
        Target::Safetensors,
        Target::Adapter,
        Target::TablesJson,
        Target::Schema,
        Target::Sql,
    ];

    /// The name of its libFuzzer binary and corpus folder.
    pub fn name(self) -> &'static str {
        match self {
            Target::Gguf => "gguf",
            Target::Safetensors => "safetensors",
            Target::Adapter => "adapter",
            Target::TablesJson => "tables_json",
            Target::Schema => "schema",
            Target::Sql => "sql",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Valid inputs to start mutating from.
    pub fn seeds(self) -> Vec<Vec<u8>> {
        match self {
            Target::Gguf => vec![seeds::gguf()],
            Target::Safetensors => vec![seeds::model_safetensors()],
            Target::Adapter => vec![seeds::adapter()],
            Target::TablesJson => vec![seeds::TABLES_JSON.as_bytes().to_vec()],
            Target::Schema => seeds::SCHEMAS.iter().map(|s| s.as_bytes().to_vec()).collect(),
            Target::Sql => seeds::QUERIES.iter().map(|s| s.as_bytes().to_vec()).collect(),
        }
    }

    /// Feed `data` to the reader; errors are expected, panics are bugs.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::Gguf => gguf(data),
            Target::Safetensors => safetensors(data),
            Target::Adapter => adapter(data),
            Target::TablesJson => tables_json(data),
            Target::Schema => schema(data),
            Target::Sql => sql(data),
        }
    }
}

fn gguf(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(data.to_vec().into(), "fuzz.gguf") else {
        return;
    };
    let _ = file.chat_template();
    if let Ok(checkpoint) = file.checkpoint(BaseFormat::AsStored, &Device::Cpu) {
        let tokenizer = checkpoint.tokenizer.clone();
        if let Ok((model, ..)) = checkpoint.into_model(&Device::Cpu) {
            let _ = tokenizer.encode("SELECT a", false);
            one_step(&model);
        }
    }
}

fn safetensors(data: &[u8]) {
    if let Ok(model) = seeds::tiny_model(data) {
        one_step(&model);
    }
}

/// The input is `adapter_config.json`, [`seeds::ADAPTER_SPLIT`], then
/// `adapter_model.safetensors`; without the separator, all of it is the
/// safetensors file beside the seed's config.
fn adapter(data: &[u8]) {
    let (config, weights) = seeds::split_adapter(data);
    let Ok(config) = std::str::from_utf8(config) else {
        return;
    };
    let Ok(adapter) = Adapter::from_bytes(config, weights, Path::new("fuzz-adapter"), &Device::Cpu) else {
        return;
    };
    // A fresh model each time (applying attaches layers), from bytes made once.
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    let mut model = seeds::tiny_model(BASE.get_or_init(seeds::model_safetensors)).expect("the seed model loads");
    if adapter.apply(model.linears_mut()).is_ok() {
        one_step(&model);
    }
}

fn tables_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(tables) = SpiderTables::parse(text) else { return };
    for id in tables.db_ids() {
        if let Ok(s) = tables.schema(id) {
            rendered(s);
        }
    }
}

fn schema(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(s) = Schema::parse(text) {
        rendered(&s);
    }
}

fn sql(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    static SCHEMA: OnceLock<(Schema, SqlGrammar)> = OnceLock::new();
    let (schema, grammar) = SCHEMA.get_or_init(|| {
        let schema = Schema::parse(seeds::SCHEMAS[0]).expect("the seed schema parses");
        let grammar = SqlGrammar::new(&schema);
        (schema, grammar)
    });
    let _ = sqlora_core::sqlcheck::check(text, schema);
    let _ = grammar.verdict(text);
    let _ = grammar.is_complete(text);
    let mut budget = 64;
    let _ = grammar.close(text, &mut budget);
}

/// Both renderings, each parsed back, and a cut to a small budget.
fn rendered(s: &Schema) {
    for format in [SchemaFormat::Compact, SchemaFormat::CreateTable] {
        let text = s.render(format);
        let _ = Schema::parse(&text);
        let _ = s.fit(format, "How many names?", |t| Ok(t.len() <= 200));
    }
}

/// One forward step over two tokens: loaded weights must also run.
fn one_step(model: &Model) {
    let ids = Tensor::new(&[[1u32, 2]], model.device()).expect("a 1×2 id tensor");
    let _ = model.forward(&ids, 0, None);
}
