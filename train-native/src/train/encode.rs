//! Example → token ids with a loss mask over the SQL answer and EOS only.
//!
//! The prompt is the chat-templated user turn "Database schema / Question";
//! the answer is tokenized on its own so the prompt ids are exactly what
//! generation will see. When the whole is longer than `max_length`, the
//! schema is cut (columns, then tables, from the end), never the question or
//! the answer; examples that cannot fit even then are dropped and counted.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sqlora_core::tokenizer::Tokenizer;

use super::batch::Encoded;
use super::data::Example;

/// The prompt settings saved beside the adapter (`prompt.json`), so that
/// inference rebuilds exactly the training prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSettings {
    /// `chatml` (`<|im_start|>` turns) or `mistral` (`[INST] … [/INST]`).
    pub chat_format: String,
    /// System line (ChatML only); empty = none.
    pub system: String,
    /// Schema rendering: `CREATE TABLE name(col type, …, PRIMARY KEY …, FOREIGN KEY …)`.
    pub schema_style: String,
    pub user_template: String,
    pub few_shot: usize,
    pub max_length: usize,
}

pub const USER_TEMPLATE: &str =
    "Database schema:\n{schema}\n\nQuestion: {question}\nAnswer with a single SQLite query only.";
/// SmolLM2's template adds this system line when none is given.
const SMOLLM_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

impl PromptSettings {
    /// ChatML when the tokenizer knows `<|im_start|>`, else Mistral's `[INST]`.
    pub fn for_model(
        tok: &Tokenizer,
        chat_template: Option<&str>,
        system: &str,
        few_shot: usize,
        max_length: usize,
    ) -> Result<Self> {
        let chatml = tok.encode("<|im_start|>", false)?.len() == 1;
        let system = if !system.is_empty() {
            system.to_string()
        } else if chat_template.is_some_and(|t| t.contains(SMOLLM_SYSTEM)) {
            SMOLLM_SYSTEM.to_string()
        } else {
            String::new()
        };
        Ok(PromptSettings {
            chat_format: if chatml { "chatml" } else { "mistral" }.into(),
            system,
            schema_style: "create-table".into(),
            user_template: USER_TEMPLATE.into(),
            few_shot,
            max_length,
        })
    }

    fn user_message(&self, schema: &str, question: &str, shots: &[&Example]) -> String {
        let mut msg = String::new();
        if !shots.is_empty() {
            msg.push_str("Examples:\n");
            for s in shots {
                msg.push_str(&format!("Question: {}\nSQL: {}\n", s.question, s.sql));
            }
            msg.push('\n');
        }
        msg.push_str(
            &self
                .user_template
                .replace("{schema}", schema)
                .replace("{question}", question),
        );
        msg
    }

    /// The full prompt text up to where the answer starts.
    pub fn prompt(&self, schema: &str, question: &str, shots: &[&Example]) -> String {
        let user = self.user_message(schema, question, shots);
        match self.chat_format.as_str() {
            "chatml" => {
                let sys = if self.system.is_empty() {
                    String::new()
                } else {
                    format!("<|im_start|>system\n{}<|im_end|>\n", self.system)
                };
                format!("{sys}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
            }
            _ => format!("<s>[INST] {user} [/INST]"),
        }
    }
}

/// Counts of what encoding did to a dataset.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EncodeStats {
    pub encoded: usize,
    /// Examples whose schema was cut to fit `max_length`.
    pub schema_cut: usize,
    /// Examples too long even with the smallest schema (dropped).
    pub dropped: usize,
}

pub struct Encoder<'a> {
    pub tok: &'a Tokenizer,
    pub settings: PromptSettings,
    pub eos: u32,
}

impl Encoder<'_> {
    /// Prompt ids and answer ids (`sql` + EOS) for one example.
    fn parts(&self, schema: &str, ex: &Example, shots: &[&Example]) -> Result<(Vec<u32>, Vec<u32>)> {
        let prompt = self
            .tok
            .encode(&self.settings.prompt(schema, &ex.question, shots), false)?;
        let mut answer = self.tok.encode(&ex.sql, false)?;
        answer.push(self.eos);
        Ok((prompt, answer))
    }

    /// `None` when the example cannot fit `max_length`.
    pub fn encode(&self, ex: &Example, shots: &[&Example], stats: &mut EncodeStats) -> Result<Option<Encoded>> {
        let max = self.settings.max_length;
        let full = ex.schema.render();
        let (mut prompt, answer) = self
            .parts(&full, ex, shots)
            .with_context(|| format!("encoding `{}`", ex.question))?;
        if prompt.len() + answer.len() > max {
            // Cuts get shorter monotonically: binary-search the longest that fits.
            let cuts: Vec<String> = ex.schema.cuts().skip(1).collect();
            let fits = |i: usize| -> Result<Option<Vec<u32>>> {
                let (p, _) = self.parts(&cuts[i], ex, shots)?;
                Ok((p.len() + answer.len() <= max).then_some(p))
            };
            let (mut lo, mut hi) = (0usize, cuts.len());
            let mut best = None;
            while lo < hi {
                let mid = (lo + hi) / 2;
                match fits(mid)? {
                    Some(p) => {
                        best = Some(p);
                        hi = mid;
                    }
                    None => lo = mid + 1,
                }
            }
            match best {
                Some(p) => {
                    prompt = p;
                    stats.schema_cut += 1;
                }
                None => {
                    stats.dropped += 1;
                    return Ok(None);
                }
            }
        }
        stats.encoded += 1;
        let loss_mask = std::iter::repeat_n(false, prompt.len())
            .chain(std::iter::repeat_n(true, answer.len()))
            .collect();
        let mut ids = prompt;
        ids.extend(answer);
        Ok(Some(Encoded { ids, loss_mask }))
    }
}

/// Few-shot retrieval: the k training questions most similar to a question,
/// by TF-IDF-weighted word overlap (cosine). An example never retrieves itself.
pub struct FewShot {
    docs: Vec<HashMap<String, f64>>,
    idf: HashMap<String, f64>,
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl FewShot {
    pub fn new(pool: &[Example]) -> Self {
        let mut df: HashMap<String, f64> = HashMap::new();
        for ex in pool {
            for w in words(&ex.question).into_iter().collect::<HashSet<_>>() {
                *df.entry(w).or_default() += 1.0;
            }
        }
        let n = pool.len() as f64;
        let idf: HashMap<String, f64> = df.into_iter().map(|(w, d)| (w, (n / d).ln() + 1.0)).collect();
        let docs = pool.iter().map(|ex| Self::vector(&idf, &ex.question)).collect();
        FewShot { docs, idf }
    }

    fn vector(idf: &HashMap<String, f64>, text: &str) -> HashMap<String, f64> {
        let mut v: HashMap<String, f64> = HashMap::new();
        for w in words(text) {
            *v.entry(w.clone()).or_default() += idf.get(&w).copied().unwrap_or(1.0);
        }
        let norm = v.values().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        v.values_mut().for_each(|x| *x /= norm);
        v
    }

    /// Indices into the pool, best first; `exclude` (the example itself) is skipped.
    pub fn nearest(&self, question: &str, k: usize, exclude: Option<usize>) -> Vec<usize> {
        if k == 0 {
            return vec![];
        }
        let q = Self::vector(&self.idf, question);
        let mut scored: Vec<(f64, usize)> = self
            .docs
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != exclude)
            .map(|(i, d)| {
                (
                    q.iter().map(|(w, x)| x * d.get(w).copied().unwrap_or(0.0)).sum::<f64>(),
                    i,
                )
            })
            .collect();
        // Ties broken by index, so retrieval is deterministic.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(k).map(|(_, i)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::{DbSchema, TableDef};
    use std::sync::Arc;

    fn ex(q: &str, sql: &str) -> Example {
        Example {
            db_id: "d".into(),
            question: q.into(),
            sql: sql.into(),
            schema: Arc::new(DbSchema { tables: vec![] }),
        }
    }

    #[test]
    fn few_shot_picks_similar_questions_not_itself() {
        let pool = vec![
            ex("How many singers are there?", "a"),
            ex("List the names of all stadiums", "b"),
            ex("How many singers do we have?", "c"),
            ex("What is the average age of singers?", "d"),
        ];
        let fs = FewShot::new(&pool);
        assert_eq!(fs.nearest("How many singers are there?", 1, Some(0)), vec![2]);
        assert_eq!(fs.nearest("names of stadiums", 2, None)[0], 1);
        assert!(fs.nearest("x", 0, None).is_empty());
    }

    #[test]
    fn prompt_formats() {
        let s = PromptSettings {
            chat_format: "chatml".into(),
            system: "sys".into(),
            schema_style: "create-table".into(),
            user_template: USER_TEMPLATE.into(),
            few_shot: 1,
            max_length: 256,
        };
        let shot = ex("Q1?", "SELECT 1");
        let p = s.prompt("CREATE TABLE t(a int)", "Q2?", &[&shot]);
        assert_eq!(
            p,
            "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nExamples:\nQuestion: Q1?\nSQL: SELECT 1\n\nDatabase schema:\nCREATE TABLE t(a int)\n\nQuestion: Q2?\nAnswer with a single SQLite query only.<|im_end|>\n<|im_start|>assistant\n"
        );
        let _ = TableDef {
            name: String::new(),
            columns: vec![],
            primary_key: vec![],
            foreign_keys: vec![],
        };
    }
}
