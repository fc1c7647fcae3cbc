//! Schema-constrained decoding: at each step the model may only pick a token
//! that keeps its output the beginning of one read-only SQLite query whose
//! tables, columns and aliases exist in the given schema; end-of-text is
//! allowed only where the query is whole, and `;` ends it.
//!
//! Lazy masking: rather than testing every token of the vocabulary each step,
//! the candidates are tried best first and the first that fits is taken
//! (greedy), or a sample is redrawn without the ones that do not (sampling).
//! The model's own choice fits almost always, so a step usually costs one
//! check of the text (a parse of a few hundred characters).

mod grammar;
mod lexer;
mod scope;

use std::sync::Arc;

pub use grammar::Verdict;

use crate::schema::Schema;
use crate::tokenizer::Tokenizer;
use crate::Result;
use scope::SchemaIndex;

/// The text each token appends, computed once per tokenizer.
pub struct Vocab {
    /// `None`: never allowed (special tokens, partial UTF-8, empty pieces).
    pieces: Vec<Option<Box<str>>>,
}

impl Vocab {
    /// Decodes every id after a plain anchor token: SentencePiece decoders
    /// drop a leading space at the start of a text, so a token decoded alone
    /// can lose the space it adds mid-text.
    pub fn new(tok: &Tokenizer) -> Result<Self> {
        let anchor = tok.encode("a", false)?;
        let anchor_text = tok.decode(&anchor, true)?;
        let n = tok.vocab_size();
        let mut pieces = Vec::with_capacity(n);
        let mut ids = anchor.clone();
        for id in 0..n as u32 {
            ids.truncate(anchor.len());
            ids.push(id);
            let text = tok.decode(&ids, true)?;
            let piece = text
                .strip_prefix(anchor_text.as_str())
                .filter(|p| !p.is_empty() && !p.contains('\u{FFFD}'))
                .map(Box::from);
            pieces.push(piece);
        }
        Ok(Vocab { pieces })
    }

    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).and_then(|p| p.as_deref())
    }

    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
}

/// The queries over one schema, as a prefix grammar.
pub struct SqlGrammar {
    schema: SchemaIndex,
}

impl SqlGrammar {
    pub fn new(schema: &Schema) -> Self {
        SqlGrammar {
            schema: SchemaIndex::new(schema),
        }
    }

    /// Is `text` the beginning of a query over the schema?
    pub fn verdict(&self, text: &str) -> Verdict {
        grammar::prefix(&self.schema, text)
    }

    /// Is `text` a whole query?
    pub fn is_complete(&self, text: &str) -> bool {
        grammar::complete(&self.schema, text)
    }
}

/// The constraint for one schema.
#[derive(Clone)]
pub struct SqlConstraint {
    grammar: Arc<SqlGrammar>,
    vocab: Arc<Vocab>,
    /// Ids that end generation (EOS, end of turn): allowed only after a whole query.
    stops: Vec<u32>,
}

/// One output being decoded under a constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlState {
    /// The query so far (the answer prefix included).
    pub text: String,
    /// A `;` ended it.
    pub ended: bool,
}

impl SqlConstraint {
    pub fn new(schema: &Schema, vocab: Arc<Vocab>, stops: Vec<u32>) -> Self {
        SqlConstraint {
            grammar: Arc::new(SqlGrammar::new(schema)),
            vocab,
            stops,
        }
    }

    /// The state after `prefix` (the part of the answer the prompt holds, e.g. `SELECT`).
    pub fn start(&self, prefix: &str) -> SqlState {
        SqlState {
            text: prefix.to_string(),
            ended: false,
        }
    }

    pub fn grammar(&self) -> &SqlGrammar {
        &self.grammar
    }

    /// May `id` come next?
    pub fn allows(&self, state: &SqlState, id: u32) -> bool {
        if state.ended {
            return false;
        }
        if self.stops.contains(&id) {
            return self.grammar.is_complete(&state.text);
        }
        let Some(piece) = self.vocab.piece(id) else {
            return false;
        };
        let mut text = String::with_capacity(state.text.len() + piece.len());
        text.push_str(&state.text);
        text.push_str(piece);
        !has_blank_line_at_end(&text) && self.grammar.verdict(&text) != Verdict::Invalid
    }

    /// Appends `id` (which [`Self::allows`]).
    pub fn advance(&self, state: &mut SqlState, id: u32) {
        if let Some(piece) = self.vocab.piece(id) {
            state.text.push_str(piece);
            state.ended = self.grammar.verdict(&state.text) == Verdict::Ended;
        }
    }

    /// The best-scored ids that may come next, best first, at most `m`.
    pub fn best_allowed(&self, state: &SqlState, scores: &[f32], m: usize) -> Vec<u32> {
        let desc = |a: &u32, b: &u32| scores[*b as usize].total_cmp(&scores[*a as usize]);
        // The model's first choice fits almost always: one scan, no sort.
        if m == 1 {
            let top = (0..scores.len() as u32).max_by(|a, b| desc(b, a));
            if let Some(top) = top.filter(|&t| self.allows(state, t)) {
                return vec![top];
            }
        }
        let mut order: Vec<u32> = (0..scores.len() as u32).collect();
        let mut out = Vec::with_capacity(m);
        let mut from = 0;
        let mut chunk = 64;
        while from < order.len() && out.len() < m {
            let to = (from + chunk).min(order.len());
            let rest = &mut order[from..];
            if to - from < rest.len() {
                rest.select_nth_unstable_by(to - from - 1, desc);
            }
            order[from..to].sort_by(desc);
            out.extend(
                order[from..to]
                    .iter()
                    .copied()
                    .filter(|&id| self.allows(state, id))
                    .take(m - out.len()),
            );
            from = to;
            chunk *= 4;
        }
        out
    }
}

/// A query holds no blank line: a model that starts one is rambling.
fn has_blank_line_at_end(text: &str) -> bool {
    let trailing = &text[text.trim_end().len()..];
    trailing.matches('\n').count() >= 2
}

#[cfg(test)]
mod tests;
