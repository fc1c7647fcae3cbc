//! Example → token ids with a loss mask over the SQL answer and its end of
//! turn only, through core's [`PromptSettings::encode_example`] (the same
//! prompt that evaluation, generation and the browser build): chat template,
//! schema cut to the prompt's schema budget by what the question names (as at
//! inference), few-shot examples dropped first when too long.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use serde::Serialize;
use sqlora_core::chat::ChatTemplate;
use sqlora_core::prompt::{FewShot, PromptSettings};
use sqlora_core::tokenizer::Tokenizer;

use super::batch::Encoded;
use super::data::Example;

/// Counts of what encoding did to a dataset.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EncodeStats {
    pub encoded: usize,
    /// Examples whose schema was cut to the schema budget.
    pub schema_cut: usize,
    /// Examples that lost few-shot examples to fit.
    pub shots_dropped: usize,
    /// Examples longer than `max_length` even without few-shot examples (dropped).
    pub dropped: usize,
    /// Examples whose SQL does not start with the answer prefix (`SELECT`): dropped.
    pub unprefixed: usize,
}

pub struct Encoder<'a> {
    pub tok: &'a Tokenizer,
    pub template: &'a ChatTemplate,
    pub settings: PromptSettings,
    pub max_length: usize,
}

impl Encoder<'_> {
    /// `None` when the example cannot be trained on (too long, or its SQL does
    /// not start with the answer prefix); `stats` says which.
    pub fn encode(&self, ex: &Example, shots: &[FewShot], stats: &mut EncodeStats) -> Result<Option<Encoded>> {
        let prefix = &self.settings.answer_prefix;
        if !prefix.is_empty()
            && !ex
                .sql
                .trim()
                .get(..prefix.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(prefix))
        {
            stats.unprefixed += 1;
            return Ok(None);
        }
        let enc = self
            .settings
            .encode_example(
                self.template,
                self.tok,
                &ex.schema,
                &ex.question,
                shots,
                &ex.sql,
                self.max_length,
            )
            .map_err(|e| anyhow::anyhow!("encoding `{}` ({}): {e}", ex.question, ex.db_id))?;
        let Some(enc) = enc else {
            stats.dropped += 1;
            return Ok(None);
        };
        stats.encoded += 1;
        stats.schema_cut += enc.schema_cut() as usize;
        stats.shots_dropped += (enc.dropped_shots > 0) as usize;
        let loss_mask = (0..enc.input_ids.len()).map(|i| i >= enc.prompt_len).collect();
        Ok(Some(Encoded {
            ids: enc.input_ids,
            loss_mask,
        }))
    }
}

/// Few-shot retrieval: the k training questions most similar to a question,
/// by TF-IDF-weighted word overlap (cosine). An example never retrieves itself.
pub struct ShotIndex {
    docs: Vec<HashMap<String, f64>>,
    idf: HashMap<String, f64>,
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl ShotIndex {
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
        ShotIndex { docs, idf }
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

/// The pool examples `idx` as core's few-shot pairs.
pub fn shots(pool: &[Example], idx: &[usize]) -> Vec<FewShot> {
    idx.iter()
        .map(|&i| FewShot {
            question: pool[i].question.clone(),
            sql: pool[i].sql.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlora_core::schema::Schema;
    use std::sync::Arc;

    fn ex(q: &str, sql: &str) -> Example {
        Example {
            db_id: "d".into(),
            question: q.into(),
            sql: sql.into(),
            schema: Arc::new(Schema::default()),
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
        let fs = ShotIndex::new(&pool);
        assert_eq!(fs.nearest("How many singers are there?", 1, Some(0)), vec![2]);
        assert_eq!(fs.nearest("names of stadiums", 2, None)[0], 1);
        assert!(fs.nearest("x", 0, None).is_empty());
        assert_eq!(shots(&pool, &[2])[0].sql, "c");
    }
}
