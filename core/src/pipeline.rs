//! Text-to-SQL in one type: a model, its tokenizer and chat template, and the
//! prompt settings it was trained with. The CLI, the evaluator and the browser
//! all go through [`Text2Sql`], so they ask the model the same way.

use candle_core::Device;

use std::sync::{Arc, OnceLock};

use crate::chat::ChatTemplate;
use crate::constrain::{SqlConstraint, Vocab};
use crate::generate::{generate, Generation, GenerationConfig};
use crate::model::Model;
use crate::prompt::{extract_sql, FewShot, PromptSettings};
use crate::schema::Schema;
use crate::tokenizer::Tokenizer;
use crate::weights::{BaseFormat, Bytes, Checkpoint, GgufFile};
use crate::Result;

/// File beside `adapter_config.json` holding the [`PromptSettings`] of training.
pub const PROMPT_SETTINGS_FILE: &str = "sqlora_prompt.json";

pub struct Text2Sql {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    pub settings: PromptSettings,
    /// Where the model came from, for messages.
    pub name: String,
    /// Each token's text, for constrained decoding (built at first use).
    vocab: OnceLock<Arc<Vocab>>,
}

/// A completion and the SQL taken from it.
#[derive(Debug, Clone)]
pub struct SqlAnswer {
    pub completion: String,
    pub sql: String,
    pub generation: Generation,
}

impl Text2Sql {
    /// `settings`: explicit settings (an adapter's) win over the model file's own.
    pub fn from_checkpoint(ck: Checkpoint, settings: Option<PromptSettings>, device: &Device) -> Result<Self> {
        let name = ck.name.clone();
        let file_settings = ck.prompt_settings.clone();
        let (model, tokenizer, template_src) = ck.into_model(device)?;
        let template = ChatTemplate::from_source_or_fallback(template_src.as_deref(), &tokenizer)?;
        let settings = match (settings, file_settings) {
            (Some(s), _) => s,
            (None, Some(json)) => PromptSettings::from_json(&json)?,
            (None, None) => PromptSettings::default(),
        };
        Ok(Text2Sql {
            model,
            tokenizer,
            template,
            settings,
            name,
            vocab: OnceLock::new(),
        })
    }

    /// A `.gguf` file, an HF directory or a hub id.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(spec: &str, format: BaseFormat, device: &Device) -> Result<Self> {
        let source = crate::weights::ModelSource::parse(spec)?;
        Self::from_checkpoint(crate::weights::load(&source, format, device)?, None, device)
    }

    /// A GGUF held in memory (the browser's download). `origin` names it in errors.
    pub fn from_gguf_bytes(bytes: Vec<u8>, origin: &str) -> Result<Self> {
        let file = GgufFile::from_bytes(Bytes::from(bytes), origin)?;
        Self::from_checkpoint(file.checkpoint(BaseFormat::AsStored, &Device::Cpu)?, None, &Device::Cpu)
    }

    /// Attach a peft adapter directory; its prompt settings, if saved, replace the current ones.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn apply_adapter(&mut self, dir: &std::path::Path) -> Result<usize> {
        let adapter = crate::adapter::Adapter::load(dir, self.model.device())?;
        let n = adapter.apply(self.model.linears_mut())?;
        let p = dir.join(PROMPT_SETTINGS_FILE);
        if p.is_file() {
            let text = std::fs::read_to_string(&p).map_err(|source| crate::Error::Io {
                path: p.clone(),
                source,
            })?;
            self.settings = PromptSettings::from_json(&text).map_err(|e| crate::Error::file(&p, e))?;
        }
        Ok(n)
    }

    /// The chat-templated prompt for a schema and question.
    pub fn prompt(&self, schema: &Schema, question: &str, shots: &[FewShot]) -> Result<String> {
        let schema_text = self.settings.schema_text(schema, question, &self.tokenizer)?;
        self.settings.prompt(&self.template, &schema_text.text, question, shots)
    }

    /// The part of the answer that `prompt` already holds (the answer prefix,
    /// e.g. `SELECT`, when the prompt ends with it).
    fn answer_start(&self, prompt: &str) -> &str {
        let prefix = &self.settings.answer_prefix;
        match !prefix.is_empty() && prompt.ends_with(prefix.as_str()) {
            true => prefix,
            false => "",
        }
    }

    /// The constrained-decoding guide for an answer over `schema` after
    /// `prompt`, when `cfg` asks for one.
    pub fn constraint(&self, schema: &Schema, prompt: &str, cfg: &GenerationConfig) -> Result<Option<SqlConstraint>> {
        if !cfg.constrain {
            return Ok(None);
        }
        let vocab = match self.vocab.get() {
            Some(v) => v.clone(),
            None => {
                let v = Arc::new(Vocab::new(&self.tokenizer)?);
                self.vocab.get_or_init(|| v).clone()
            }
        };
        let mut stops = self.tokenizer.stop_ids();
        stops.extend(&cfg.stop_ids);
        Ok(Some(SqlConstraint::new(
            schema,
            vocab,
            stops,
            self.answer_start(prompt),
        )))
    }

    /// Generate after `prompt`, streaming text pieces to `on_token` (return
    /// false to stop). Given the `schema` the prompt shows, the answer is
    /// constrained to it (unless `cfg.constrain` is off).
    pub fn generate(
        &self,
        prompt: &str,
        schema: Option<&Schema>,
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> Result<SqlAnswer> {
        let ids = self.tokenizer.encode_prompt(prompt)?;
        let constraint = match schema {
            Some(s) => self.constraint(s, prompt, cfg)?,
            None => None,
        };
        // The prompt may end inside the answer (the answer prefix, e.g. `SELECT`):
        // the stream and the completion both start with it.
        let prefix = self.answer_start(prompt);
        let in_answer = !prefix.is_empty();
        // Streamed with the first generated piece, so a caller's time to first token stays true.
        let mut pending = in_answer.then(|| prefix.to_string());
        let mut stream = |piece: &str| match pending.take() {
            Some(p) => on_token(&format!("{p}{piece}")),
            None => on_token(piece),
        };
        let generation = generate(
            &self.model,
            &self.tokenizer,
            &ids,
            cfg,
            constraint.as_ref(),
            &mut stream,
        )?;
        if let Some(p) = pending {
            on_token(&p);
        }
        Ok(self.answer(prompt, generation, constraint.is_some()))
    }

    /// The SQL of a generation after `prompt` (which may end inside the answer:
    /// the completion then starts with the answer prefix).
    /// A `constrained` completion is the query itself; others may wrap it in
    /// prose or fences ([`extract_sql`]).
    fn answer(&self, prompt: &str, generation: Generation, constrained: bool) -> SqlAnswer {
        let completion = format!("{}{}", self.answer_start(prompt), generation.text);
        let sql = match constrained {
            true => completion.trim().trim_end_matches(';').trim_end().to_string(),
            false => extract_sql(&completion),
        };
        SqlAnswer {
            sql,
            completion,
            generation,
        }
    }

    /// Prompt + generate for one question.
    pub fn sql_for(&self, schema: &Schema, question: &str, cfg: &GenerationConfig) -> Result<SqlAnswer> {
        let prompt = self.prompt(schema, question, &[])?;
        self.generate(&prompt, Some(schema), cfg, &mut |_| true)
    }

    /// Prompt + greedy generation for several questions as one batch (the same
    /// answers as [`Self::sql_for`] on each; see [`crate::generate::generate_batch`]).
    pub fn sql_for_batch(&self, items: &[(&Schema, &str)], cfg: &GenerationConfig) -> Result<Vec<SqlAnswer>> {
        let prompts = items
            .iter()
            .map(|(schema, question)| self.prompt(schema, question, &[]))
            .collect::<Result<Vec<_>>>()?;
        let ids = prompts
            .iter()
            .map(|p| self.tokenizer.encode_prompt(p))
            .collect::<Result<Vec<_>>>()?;
        let constraints = items
            .iter()
            .zip(&prompts)
            .filter_map(|((schema, _), p)| self.constraint(schema, p, cfg).transpose())
            .collect::<Result<Vec<_>>>()?;
        let generations = crate::generate::generate_batch(&self.model, &self.tokenizer, &ids, cfg, &constraints)?;
        Ok(prompts
            .iter()
            .zip(generations)
            .map(|(p, g)| self.answer(p, g, !constraints.is_empty()))
            .collect())
    }
}
