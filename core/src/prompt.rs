//! What the model is asked, identically in training, evaluation and the
//! browser: [`PromptSettings`] (stored beside adapters and in GGUF metadata),
//! the schema as prompts show it ([`PromptSettings::schema_text`]), the
//! chat-templated prompt, the prompt/answer split for training, and
//! [`extract_sql`] for completions.
//!
//! The default user turn is the Python peer's (peer/common.py), so results are
//! comparable:
//!
//! ```text
//! Database schema:
//! {schema}
//!
//! Question: {question}
//! Answer with a single SQLite query only.
//! ```
//!
//! Few-shot examples, when given, go between the schema and the question as
//! `Examples:\nQuestion: …\nSQL: …\n…\n\n` (the `{examples}` placeholder).

use serde::{Deserialize, Serialize};

use crate::chat::{ChatMessage, ChatTemplate};
use crate::schema::{FittedSchema, Schema, SchemaFormat};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The peer's user turn, with the few-shot slot.
pub const DEFAULT_USER_TEMPLATE: &str =
    "Database schema:\n{schema}\n\n{examples}Question: {question}\nAnswer with a single SQLite query only.";

/// See [`PromptSettings::answer_prefix`].
pub const DEFAULT_ANSWER_PREFIX: &str = "SELECT";

/// How prompts are built. Serialisable (JSON) so an adapter carries the
/// settings it was trained with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptSettings {
    /// System message. `None`: the chat template's own default (SmolLM2's
    /// template inserts "You are a helpful AI assistant named SmolLM…").
    pub system: Option<String>,
    /// How the schema is written (compact one-line-per-table by default).
    pub schema_format: SchemaFormat,
    /// The user turn; `{schema}`, `{question}` and `{examples}` are replaced.
    pub user_template: String,
    /// Text the assistant's answer starts with, placed at the end of the prompt
    /// (`SELECT`: every Spider and WikiSQL query starts with it). It keeps a small
    /// base model from answering in prose, and training moves it from the answer
    /// into the prompt, so both see the same split. Empty: no prefix.
    pub answer_prefix: String,
    /// Most tokens the schema may take in a prompt; a longer one is cut by
    /// what the question names ([`Schema::fit`]), the same way in training,
    /// evaluation and the browser. `None`: always whole. 384 keeps 147 of
    /// Spider's 166 schemas whole (SmolLM2's tokenizer, compact format).
    pub schema_budget: Option<usize>,
}

/// See [`PromptSettings::schema_budget`].
pub const DEFAULT_SCHEMA_BUDGET: usize = 384;

impl Default for PromptSettings {
    fn default() -> Self {
        PromptSettings {
            system: None,
            schema_format: SchemaFormat::Compact,
            user_template: DEFAULT_USER_TEMPLATE.to_string(),
            answer_prefix: DEFAULT_ANSWER_PREFIX.to_string(),
            schema_budget: Some(DEFAULT_SCHEMA_BUDGET),
        }
    }
}

impl PromptSettings {
    /// GGUF metadata key (a JSON string) under which exported models carry
    /// their prompt settings.
    pub const GGUF_KEY: &'static str = "sqlora.prompt_settings";

    /// The settings stored in GGUF metadata under [`Self::GGUF_KEY`], if any.
    pub fn from_gguf_metadata(
        md: &std::collections::HashMap<String, candle_core::quantized::gguf_file::Value>,
    ) -> Result<Option<Self>> {
        match md.get(Self::GGUF_KEY) {
            None => Ok(None),
            Some(v) => {
                let text = v
                    .to_string()
                    .map_err(|_| Error::msg(format!("GGUF metadata `{}` is not a string", Self::GGUF_KEY)))?;
                Self::from_json(text).map(Some)
            }
        }
    }

    /// The GGUF metadata entry (key, value) that stores these settings.
    pub fn to_gguf_metadata(&self) -> (String, candle_core::quantized::gguf_file::Value) {
        (
            Self::GGUF_KEY.to_string(),
            candle_core::quantized::gguf_file::Value::String(self.to_json()),
        )
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("settings serialise")
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let s: PromptSettings = serde_json::from_str(text).map_err(|e| Error::msg(format!("prompt settings: {e}")))?;
        if !s.user_template.contains("{question}") {
            return Err(Error::msg(
                "prompt settings: user_template has no {question} placeholder",
            ));
        }
        Ok(s)
    }

    /// The schema as a prompt shows it: rendered in `schema_format` and cut to
    /// `schema_budget` tokens by what the question names. The one place
    /// prompts get their schema: it never sees an answer, so a model is
    /// trained on the schemas it will be shown.
    pub fn schema_text(&self, schema: &Schema, question: &str, tok: &Tokenizer) -> Result<FittedSchema> {
        let whole = || FittedSchema {
            text: schema.render(self.schema_format),
            dropped_tables: 0,
            dropped_columns: 0,
        };
        let Some(budget) = self.schema_budget else {
            return Ok(whole());
        };
        let fitted = schema.fit(self.schema_format, question, |text| {
            Ok(tok.encode(text, false)?.len() <= budget)
        })?;
        Ok(fitted.unwrap_or_else(whole))
    }

    /// The user turn for a schema text, question and few-shot examples.
    pub fn user_message(&self, schema_text: &str, question: &str, shots: &[FewShot]) -> String {
        let examples = if shots.is_empty() {
            String::new()
        } else {
            let mut s = String::from("Examples:\n");
            for ex in shots {
                s.push_str(&format!("Question: {}\nSQL: {}\n", ex.question.trim(), ex.sql.trim()));
            }
            s.push('\n');
            s
        };
        // Replace {question} last so a question containing "{schema}" stays as is.
        self.user_template
            .replace("{schema}", schema_text)
            .replace("{examples}", &examples)
            .replace("{question}", question.trim())
    }

    /// The chat messages (optional system + user).
    pub fn messages(&self, schema_text: &str, question: &str, shots: &[FewShot]) -> Vec<ChatMessage> {
        let mut msgs = Vec::with_capacity(2);
        if let Some(sys) = &self.system {
            msgs.push(ChatMessage::system(sys.clone()));
        }
        msgs.push(ChatMessage::user(self.user_message(schema_text, question, shots)));
        msgs
    }

    /// The prompt text the model continues (ends with the assistant header).
    pub fn prompt(
        &self,
        template: &ChatTemplate,
        schema_text: &str,
        question: &str,
        shots: &[FewShot],
    ) -> Result<String> {
        let mut prompt = template.render(&self.messages(schema_text, question, shots), true)?;
        prompt.push_str(&self.answer_prefix);
        Ok(prompt)
    }

    /// Prompt and answer texts for training: the answer is the SQL plus the
    /// template's end of turn (`SELECT …<|im_end|>` for ChatML, `… </s>` for
    /// Mistral), so the loss can cover exactly the answer.
    pub fn training_text(
        &self,
        template: &ChatTemplate,
        schema_text: &str,
        question: &str,
        shots: &[FewShot],
        sql: &str,
    ) -> Result<TrainingText> {
        let (mut prompt, mut answer) = template.split_turn(&self.messages(schema_text, question, shots), sql.trim())?;
        if !self.answer_prefix.is_empty() {
            // The prefix moves into the prompt (exactly as generation sees it); a
            // query that does not start with it (any case) cannot be taught with it.
            let n = self.answer_prefix.len();
            if !answer
                .get(..n)
                .is_some_and(|head| head.eq_ignore_ascii_case(&self.answer_prefix))
            {
                return Err(Error::msg(format!(
                    "the answer `{}` does not start with the answer prefix `{}`",
                    sql.trim(),
                    self.answer_prefix
                )));
            }
            prompt.push_str(&self.answer_prefix);
            answer = answer[n..].to_string();
        }
        Ok(TrainingText { prompt, answer })
    }

    /// Token ids of one training example within `max_length`.
    ///
    /// The prompt is encoded with [`Tokenizer::encode_prompt`] and the answer
    /// on its own (so the prompt ids are exactly what generation sees). The
    /// schema is [`Self::schema_text`]'s, as at inference; when the example
    /// is still too long, few-shot examples are dropped (last first).
    /// `Ok(None)`: it does not fit even without them (raise `max_length`).
    #[allow(clippy::too_many_arguments)]
    pub fn encode_example(
        &self,
        template: &ChatTemplate,
        tok: &Tokenizer,
        schema: &Schema,
        question: &str,
        shots: &[FewShot],
        sql: &str,
        max_length: usize,
    ) -> Result<Option<EncodedExample>> {
        let fitted = self.schema_text(schema, question, tok)?;
        for n_shots in (0..=shots.len()).rev() {
            let t = self.training_text(template, &fitted.text, question, &shots[..n_shots], sql)?;
            let (p, a) = (tok.encode_prompt(&t.prompt)?, tok.encode(&t.answer, false)?);
            if p.len() + a.len() <= max_length {
                return Ok(Some(EncodedExample::new(
                    p,
                    a,
                    shots.len() - n_shots,
                    fitted.dropped_tables,
                    fitted.dropped_columns,
                )));
            }
        }
        Ok(None)
    }
}

/// A (question, SQL) pair shown to the model as an example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FewShot {
    pub question: String,
    pub sql: String,
}

/// Prompt and answer text of a training example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingText {
    pub prompt: String,
    pub answer: String,
}

/// Ids of a training example: `input_ids = prompt ++ answer`; the loss
/// covers positions `prompt_len..` (the answer and its end-of-turn token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedExample {
    pub input_ids: Vec<u32>,
    pub prompt_len: usize,
    /// Few-shot examples dropped to fit.
    pub dropped_shots: usize,
    /// Schema tables / columns dropped to fit.
    pub dropped_tables: usize,
    pub dropped_columns: usize,
}

impl EncodedExample {
    fn new(prompt: Vec<u32>, answer: Vec<u32>, shots: usize, tables: usize, cols: usize) -> Self {
        let prompt_len = prompt.len();
        let mut input_ids = prompt;
        input_ids.extend(answer);
        EncodedExample {
            input_ids,
            prompt_len,
            dropped_shots: shots,
            dropped_tables: tables,
            dropped_columns: cols,
        }
    }

    /// Whether the schema was cut to fit.
    pub fn schema_cut(&self) -> bool {
        self.dropped_tables + self.dropped_columns > 0
    }

    /// Labels for causal-LM loss: -100 over the prompt, the ids elsewhere.
    pub fn labels(&self) -> Vec<i64> {
        self.input_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| if i < self.prompt_len { -100 } else { id as i64 })
            .collect()
    }
}

/// End-of-turn / end-of-text markers a completion may still contain.
const STOP_TEXTS: &[&str] = &[
    "<|im_end|>",
    "</s>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "<|im_start|>",
    "[INST]",
];

/// The SQL statement in a model's completion.
///
/// Steps: cut at the first end-of-turn marker; if there is a ``` fence, take
/// its content (dropping an `sql`/`sqlite` tag); drop a leading label such as
/// `SQL:` / `Answer:`; if prose precedes the query, start at the first
/// `SELECT`/`WITH` that begins a line or follows prose; keep the first
/// statement (up to a `;` outside quotes, or a blank line); finally drop
/// trailing prose lines until the statement parses (when some prefix does).
pub fn extract_sql(completion: &str) -> String {
    let mut text = completion;
    for stop in STOP_TEXTS {
        if let Some(p) = text.find(stop) {
            text = &text[..p];
        }
    }
    let text = inside_fence(text).unwrap_or(text);
    let text = strip_label(text.trim());
    let text = start_at_query(text);
    let stmt = first_statement(text);
    let stmt = drop_trailing_prose(stmt);
    stmt.trim().trim_end_matches(';').trim().to_string()
}

fn inside_fence(text: &str) -> Option<&str> {
    let start = text.find("```")?;
    let after = &text[start + 3..];
    // A language tag on the fence line.
    let body = match after.find('\n') {
        Some(nl) if after[..nl].trim().chars().all(|c| c.is_ascii_alphanumeric()) => &after[nl + 1..],
        _ => after,
    };
    Some(match body.find("```") {
        Some(end) => &body[..end],
        None => body,
    })
}

fn strip_label(text: &str) -> &str {
    // "SQL:", "SQLite query:", "Answer:", "Query:" — a short label of words then ':'.
    if let Some(colon) = text.find(':') {
        let label = &text[..colon];
        let words: Vec<&str> = label.split_whitespace().collect();
        let is_label = !words.is_empty()
            && words.len() <= 3
            && words.iter().all(|w| w.chars().all(|c| c.is_alphabetic()))
            && words.iter().any(|w| {
                let w = w.to_ascii_lowercase();
                matches!(
                    w.as_str(),
                    "sql" | "sqlite" | "query" | "answer" | "output" | "response"
                )
            });
        if is_label {
            return text[colon + 1..].trim_start();
        }
    }
    text
}

fn starts_with_keyword(s: &str, kw: &str) -> bool {
    s.len() >= kw.len()
        && s[..kw.len()].eq_ignore_ascii_case(kw)
        && s[kw.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_')
}

const STATEMENT_STARTS: &[&str] = &[
    "SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "REPLACE", "PRAGMA", "VALUES", "(",
];

fn start_at_query(text: &str) -> &str {
    if STATEMENT_STARTS.iter().any(|k| starts_with_keyword(text, k)) {
        return text;
    }
    // Prose first: start at the first SELECT/WITH that is a whole word.
    let upper = text.to_ascii_uppercase();
    let mut best: Option<usize> = None;
    for kw in ["SELECT", "WITH"] {
        let mut from = 0;
        while let Some(p) = upper[from..].find(kw) {
            let at = from + p;
            let before_ok = at == 0 || !upper[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
            if before_ok && starts_with_keyword(&text[at..], kw) {
                best = Some(best.map_or(at, |b: usize| b.min(at)));
                break;
            }
            from = at + kw.len();
        }
    }
    best.map_or(text, |b| &text[b..])
}

/// Up to the first `;` outside quotes, or a blank line.
fn first_statement(text: &str) -> &str {
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' | '`' => quote = Some(c),
                ';' => return &text[..i],
                '\n' if text[i + 1..].trim_start_matches([' ', '\t', '\r']).starts_with('\n') => return &text[..i],
                _ => {}
            },
        }
    }
    text
}

fn parses(sql: &str) -> bool {
    sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::SQLiteDialect {}, sql).is_ok_and(|s| s.len() == 1)
}

/// "SELECT …\nThis query counts …" or "SELECT … > 30. It lists …": when the
/// whole does not parse, take the longest prefix ending at a line break or a
/// sentence end (`. `) that does.
fn drop_trailing_prose(stmt: &str) -> &str {
    let stmt = stmt.trim();
    if parses(stmt) {
        return stmt;
    }
    let mut cuts: Vec<usize> = stmt
        .char_indices()
        .filter(|&(i, c)| c == '\n' || (c == '.' && stmt[i + 1..].starts_with([' ', '\n'])))
        .map(|(i, _)| i)
        .collect();
    cuts.reverse();
    for end in cuts {
        let candidate = stmt[..end].trim();
        if !candidate.is_empty() && parses(candidate) {
            return candidate;
        }
    }
    stmt
}
