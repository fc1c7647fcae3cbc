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

    /// A short text that makes `text` a whole query, if one is found among
    /// a few closing pieces (`)`, `'`, ` END`, ` = 1`, ` FROM t AS a`, …),
    /// breadth first, spending at most `budget` checks (decreased).
    pub fn close(&self, text: &str, budget: &mut usize) -> Option<String> {
        if *budget == 0 || self.verdict(text) == Verdict::Invalid {
            return None;
        }
        let aliases = dangling_qualifiers(text);
        let mut pieces: Vec<String> = [")", "'", "\"", " END", " 1", " = 1", " x"].map(String::from).to_vec();
        pieces.extend(aliases.iter().map(|a| format!(" AS {a}")));
        for t in &self.schema.tables {
            pieces.push(format!(" FROM {}", t.name));
            for a in &aliases {
                pieces.push(format!(" FROM {} AS {a}", t.name));
                pieces.push(format!(" JOIN {} AS {a}", t.name));
            }
        }
        let mut frontier = vec![String::new()];
        for _depth in 0..4 {
            let mut next = Vec::new();
            for tail in &frontier {
                for p in &pieces {
                    // Filler is used once; only brackets may repeat.
                    if p != ")" && tail.contains(p.as_str()) {
                        continue;
                    }
                    if *budget == 0 {
                        return None;
                    }
                    *budget -= 1;
                    let cand = format!("{tail}{p}");
                    let whole = format!("{text}{cand}");
                    if self.is_complete(&whole) {
                        return Some(cand);
                    }
                    if self.verdict(&whole) != Verdict::Invalid {
                        next.push(cand);
                    }
                }
            }
            frontier = next;
        }
        None
    }
}

/// Short words written before a `.` (`T1.name`): aliases FROM may still have to define.
fn dangling_qualifiers(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, _) in text.match_indices('.') {
        let word: String = text[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if (1..=3).contains(&word.len())
            && word.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && !out.contains(&word)
        {
            out.push(word);
        }
    }
    out
}

/// The constraint for one schema.
#[derive(Clone)]
pub struct SqlConstraint {
    grammar: Arc<SqlGrammar>,
    vocab: Arc<Vocab>,
    /// Ids that end generation (EOS, end of turn): allowed only after a whole query.
    stops: Vec<u32>,
    /// The part of the answer the prompt already holds (e.g. `SELECT`).
    prefix: String,
}

/// One output being decoded under a constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlState {
    /// The query so far (the answer prefix included).
    pub text: String,
    /// A `;` ended it.
    pub ended: bool,
    /// The ids taken, and the length of `text` after each.
    ids: Vec<u32>,
    ends: Vec<usize>,
}

/// No run of this many tokens may occur twice: a small model under a grammar
/// can still loop (`pet_age, pet_age, …`) until the budget runs out. Real
/// queries repeat shorter runs (`T1.id = T2.id`), rarely ten tokens.
const NO_REPEAT_NGRAM: usize = 10;

/// Would `next` complete an n-gram that already occurs in `ids`?
fn repeats(ids: &[u32], next: u32, n: usize) -> bool {
    if ids.len() < n {
        return false;
    }
    let tail = &ids[ids.len() - (n - 1)..];
    ids.windows(n).any(|w| w[n - 1] == next && &w[..n - 1] == tail)
}

impl SqlConstraint {
    pub fn new(schema: &Schema, vocab: Arc<Vocab>, stops: Vec<u32>, prefix: &str) -> Self {
        SqlConstraint {
            grammar: Arc::new(SqlGrammar::new(schema)),
            vocab,
            stops,
            prefix: prefix.to_string(),
        }
    }

    /// The state before the first generated token.
    pub fn start(&self) -> SqlState {
        SqlState {
            text: self.prefix.clone(),
            ended: false,
            ids: Vec::new(),
            ends: Vec::new(),
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
        if repeats(&state.ids, id, NO_REPEAT_NGRAM) {
            return false;
        }
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
            state.ids.push(id);
            state.ends.push(state.text.len());
        }
    }

    /// A whole query from a state the token budget ended inside of: the
    /// longest whole beginning of what was written (`SELECT … JOIN a ON …
    /// JOIN` keeps all but the last JOIN), else the shortest closing that
    /// [`SqlGrammar::close`] finds after one of the last few tokens. Returns
    /// how many ids to keep and the text to add after them.
    pub fn finish(&self, state: &SqlState) -> Option<(usize, String)> {
        let text_at = |k: usize| match k {
            0 => &state.text[..self.prefix.len()],
            k => &state.text[..state.ends[k - 1]],
        };
        let n = state.ids.len();
        if let Some(k) = (1..=n).rev().find(|&k| self.grammar.is_complete(text_at(k))) {
            return Some((k, String::new()));
        }
        // Closing later keeps more of what the model wrote; one budget of
        // checks for all tries bounds the cost (~20k parses, well under a second).
        let mut budget = 30_000;
        (0..=n).rev().find_map(|k| {
            // Short closings at many cut points beat long ones at a few.
            let mut here = budget.min(400);
            budget -= here;
            let found = self.grammar.close(text_at(k), &mut here).map(|tail| (k, tail));
            budget += here;
            found
        })
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
        // Past the first 64, a token is tried only if its first character
        // fits (valid prefixes are closed under taking prefixes), and at most
        // MAX_CHECKS are: where nothing fits by then, the query is closed instead.
        let mut first_chars: Option<[bool; 128]> = None;
        let mut checks = 0;
        let (mut from, mut chunk) = (0, 64);
        while from < order.len() && out.len() < m && checks < MAX_CHECKS {
            let to = (from + chunk).min(order.len());
            let rest = &mut order[from..];
            if to - from < rest.len() {
                rest.select_nth_unstable_by(to - from - 1, desc);
            }
            order[from..to].sort_by(desc);
            for &id in &order[from..to] {
                if out.len() == m || checks >= MAX_CHECKS {
                    break;
                }
                if from > 0 && !self.stops.contains(&id) {
                    let fits = first_chars.get_or_insert_with(|| self.first_chars(state));
                    match self.vocab.piece(id).and_then(|p| p.bytes().next()) {
                        Some(b) if b < 128 && fits[b as usize] => {}
                        Some(b) if b >= 128 => {}
                        _ => continue,
                    }
                }
                checks += 1;
                if self.allows(state, id) {
                    out.push(id);
                }
            }
            from = to;
            chunk *= 4;
        }
        out
    }

    /// Which ASCII characters may come next.
    fn first_chars(&self, state: &SqlState) -> [bool; 128] {
        let mut fits = [false; 128];
        let mut text = state.text.clone();
        for b in (b'\t'..=b'\n').chain(b' '..=b'~') {
            text.push(b as char);
            fits[b as usize] = !has_blank_line_at_end(&text) && self.grammar.verdict(&text) != Verdict::Invalid;
            text.pop();
        }
        fits
    }
}

/// Most candidate tokens tried in one step (a few milliseconds of parsing).
const MAX_CHECKS: usize = 512;

/// A query holds no blank line: a model that starts one is rambling.
fn has_blank_line_at_end(text: &str) -> bool {
    let trailing = &text[text.trim_end().len()..];
    trailing.matches('\n').count() >= 2
}

#[cfg(test)]
mod tests;
