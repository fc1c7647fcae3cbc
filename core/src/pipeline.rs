//! Text-to-SQL in one type: a model, its tokenizer and chat template, and the
//! prompt settings it was trained with. The CLI, the evaluator and the browser
//! all go through [`Text2Sql`], so they ask the model the same way.

use candle_core::Device;

use crate::chat::ChatTemplate;
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
        let schema_text = schema.render(self.settings.schema_format);
        self.settings.prompt(&self.template, &schema_text, question, shots)
    }

    /// Generate after `prompt`, streaming text pieces to `on_token` (return false to stop).
    pub fn generate(
        &self,
        prompt: &str,
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> Result<SqlAnswer> {
        let ids = self.tokenizer.encode_prompt(prompt)?;
        // The prompt may end inside the answer (the answer prefix, e.g. `SELECT`):
        // the stream and the completion both start with it.
        let prefix = &self.settings.answer_prefix;
        let in_answer = !prefix.is_empty() && prompt.ends_with(prefix.as_str());
        // Streamed with the first generated piece, so a caller's time to first token stays true.
        let mut pending = in_answer.then(|| prefix.clone());
        let mut stream = |piece: &str| match pending.take() {
            Some(p) => on_token(&format!("{p}{piece}")),
            None => on_token(piece),
        };
        let generation = generate(&self.model, &self.tokenizer, &ids, cfg, &mut stream)?;
        if let Some(p) = pending {
            on_token(&p);
        }
        Ok(self.answer(prompt, generation))
    }

    /// The SQL of a generation after `prompt` (which may end inside the answer:
    /// the completion then starts with the answer prefix).
    fn answer(&self, prompt: &str, generation: Generation) -> SqlAnswer {
        let prefix = &self.settings.answer_prefix;
        let completion = match !prefix.is_empty() && prompt.ends_with(prefix.as_str()) {
            true => self.settings.with_prefix(&generation.text),
            false => generation.text.clone(),
        };
        SqlAnswer {
            sql: extract_sql(&completion),
            completion,
            generation,
        }
    }

    /// Prompt + generate for one question.
    pub fn sql_for(&self, schema: &Schema, question: &str, cfg: &GenerationConfig) -> Result<SqlAnswer> {
        let prompt = self.prompt(schema, question, &[])?;
        self.generate(&prompt, cfg, &mut |_| true)
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
        let generations = crate::generate::generate_batch(&self.model, &self.tokenizer, &ids, cfg)?;
        Ok(prompts
            .iter()
            .zip(generations)
            .map(|(p, g)| self.answer(p, g))
            .collect())
    }
}
