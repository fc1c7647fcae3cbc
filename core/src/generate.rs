//! Decoding: greedy, temperature / top-p sampling with a seed, and beam search,
//! with max new tokens, stop ids, stop strings and a per-token callback.
//!
//! No clocks here: `std::time` is unavailable in wasm, so callers time the
//! callback themselves.

use candle_core::{DType, Tensor, D};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::{Deserialize, Serialize};

use crate::constrain::{SqlConstraint, SqlState};
use crate::model::{Cache, Model};
use crate::tokenizer::Tokenizer;
use crate::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// Nucleus sampling when < 1 (only with temperature > 0).
    pub top_p: f64,
    pub seed: u64,
    /// > 1 runs beam search (deterministic; temperature is ignored).
    pub num_beams: usize,
    /// Generation stops before any of these strings; it is not part of the output.
    pub stop_strings: Vec<String>,
    /// Extra ids that end generation, besides the tokenizer's EOS/end-of-turn.
    pub stop_ids: Vec<u32>,
    /// Keep the answer one read-only query over the question's schema
    /// ([`crate::constrain`]); applied where a schema is known (`Text2Sql`).
    pub constrain: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 128,
            temperature: 0.0,
            top_p: 1.0,
            seed: 299792458,
            num_beams: 1,
            stop_strings: Vec::new(),
            stop_ids: Vec::new(),
            constrain: true,
        }
    }
}

/// A prompt that the model cannot take: `Err` naming its length and the limit,
/// before any forward pass (a 100 KB schema used to run out of memory).
fn check_prompt_fits(model: &Model, prompt_tokens: usize) -> Result<()> {
    let limit = model.context_len();
    if prompt_tokens >= limit {
        return Err(crate::Error::msg(format!(
            "the prompt has {prompt_tokens} tokens; this model takes at most {limit} (prompt and answer together): shorten the schema or question"
        )));
    }
    Ok(())
}

impl GenerationConfig {
    /// Refuse settings that cannot mean anything (NaN or negative temperature,
    /// top-p outside (0, 1], no beams) before any work starts.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(crate::Error::msg(format!(
                "temperature must be finite and at least 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(crate::Error::msg(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if self.num_beams == 0 {
            return Err(crate::Error::msg("num_beams must be at least 1"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    StopString,
    MaxTokens,
    /// The callback asked to stop (the browser's Stop button).
    Cancelled,
    /// The query ended with `;` (constrained decoding).
    EndOfQuery,
    /// No token could continue the query (constrained decoding).
    NoValidToken,
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// New ids, without the stop id.
    pub ids: Vec<u32>,
    /// Decoded new text, cut before a stop string.
    pub text: String,
    pub stop: StopReason,
    pub prompt_tokens: usize,
}

/// Generate after `prompt_ids`. `on_token` receives each new piece of text as it
/// is decoded and returns `false` to stop. Beam search calls it once, at the end.
/// With a `constraint`, every token keeps the output a query it allows.
pub fn generate(
    model: &Model,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    cfg: &GenerationConfig,
    constraint: Option<&SqlConstraint>,
    on_token: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    cfg.validate()?;
    if prompt_ids.is_empty() {
        return Err(crate::Error::msg("empty prompt"));
    }
    check_prompt_fits(model, prompt_ids.len())?;
    // Generation ends at the context's end whatever the token budget says.
    let budget = cfg.max_new_tokens.min(model.context_len() - prompt_ids.len());
    let cfg = &GenerationConfig {
        max_new_tokens: budget,
        ..cfg.clone()
    };
    let mut stops = tok.stop_ids();
    stops.extend(&cfg.stop_ids);
    if cfg.num_beams > 1 {
        let (ids, ended) = beam_search(model, prompt_ids, cfg, &stops, constraint)?;
        let (ids, stop) = match ids.last() {
            Some(last) if stops.contains(last) => (ids[..ids.len() - 1].to_vec(), StopReason::Eos),
            _ if ended => (ids, StopReason::EndOfQuery),
            _ => (ids, StopReason::MaxTokens),
        };
        let mut text = tok.decode(&ids, true)?;
        let stop = match cut_at_stop_string(&mut text, &cfg.stop_strings) {
            true => StopReason::StopString,
            false => stop,
        };
        on_token(&text);
        return Ok(Generation {
            ids,
            text,
            stop,
            prompt_tokens: prompt_ids.len(),
        });
    }

    let sampling = if cfg.temperature <= 0.0 {
        Sampling::ArgMax
    } else if cfg.top_p < 1.0 {
        Sampling::TopP {
            p: cfg.top_p,
            temperature: cfg.temperature,
        }
    } else {
        Sampling::All {
            temperature: cfg.temperature,
        }
    };
    let mut sampler = LogitsProcessor::from_sampling(cfg.seed, sampling);
    let mut cache = model.new_cache();
    let mut row = Decoding::new(tok, constraint);
    let mut input = Tensor::new(prompt_ids, model.device())?.unsqueeze(0)?;
    while !row.done {
        let offset = cache.len();
        let logits = model.forward_last(&input, offset, Some(&mut cache))?.squeeze(0)?;
        let logits = logits.to_dtype(DType::F32)?;
        let next = match row.guide() {
            None => Some(sampler.sample(&logits)?),
            Some((c, state)) if cfg.temperature <= 0.0 => c.best_allowed(state, &logits.to_vec1()?, 1).first().copied(),
            Some((c, state)) => sample_allowed(&mut sampler, c, state, logits.to_vec1()?)?,
        };
        let Some(next) = next else {
            row.halt(StopReason::NoValidToken);
            break;
        };
        row.push(next, &stops, cfg, on_token)?;
        input = Tensor::new(&[next], model.device())?.unsqueeze(0)?;
    }
    row.finish(prompt_ids.len(), on_token)
}

/// A sample among the tokens `c` allows: draw, and redraw without a refused
/// token until one fits (the model's distribution renormalised over what fits).
fn sample_allowed(
    sampler: &mut LogitsProcessor,
    c: &SqlConstraint,
    state: &SqlState,
    mut logits: Vec<f32>,
) -> Result<Option<u32>> {
    // Past a few refusals the distribution is far from what fits: take the
    // best that fits rather than draw over the whole vocabulary again and again.
    for _ in 0..16 {
        let t = Tensor::new(logits.as_slice(), &candle_core::Device::Cpu)?;
        let id = sampler.sample(&t)?;
        if c.allows(state, id) {
            return Ok(Some(id));
        }
        logits[id as usize] = f32::NEG_INFINITY;
    }
    Ok(c.best_allowed(state, &logits, 1).first().copied())
}

/// Greedy decoding of several prompts as one batch (left-padded, one shared
/// cache): the same outputs as [`generate`] with a greedy `cfg` on each
/// prompt alone, in one forward pass per step for all of them. Sampling and
/// beam search are not batched (an error here; call [`generate`]).
/// `constraints`: one per prompt, or empty for none.
pub fn generate_batch(
    model: &Model,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    constraints: &[SqlConstraint],
) -> Result<Vec<Generation>> {
    cfg.validate()?;
    if cfg.temperature > 0.0 || cfg.num_beams > 1 {
        return Err(crate::Error::msg(
            "batched generation is greedy only (temperature 0, one beam)",
        ));
    }
    if prompts.iter().any(Vec::is_empty) {
        return Err(crate::Error::msg("empty prompt"));
    }
    if !constraints.is_empty() && constraints.len() != prompts.len() {
        return Err(crate::Error::msg("one constraint per prompt, or none"));
    }
    let Some(longest) = prompts.iter().map(Vec::len).max() else {
        return Ok(vec![]);
    };
    check_prompt_fits(model, longest)?;
    // Padded rows share the longest row's positions: its end of context ends all.
    let cfg = &GenerationConfig {
        max_new_tokens: cfg.max_new_tokens.min(model.context_len() - longest),
        ..cfg.clone()
    };
    let mut stops = tok.stop_ids();
    stops.extend(&cfg.stop_ids);
    let pad = tok.pad_id().unwrap_or(0);
    let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let ids: Vec<u32> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(pad, longest - p.len()).chain(p.iter().copied()))
        .collect();
    let dev = model.device();
    let mut input = Tensor::from_vec(ids, (prompts.len(), longest), dev)?;
    let mut cache = Cache::left_padded(model.config().num_hidden_layers, pads);
    let mut rows: Vec<Decoding> = (0..prompts.len())
        .map(|i| Decoding::new(tok, constraints.get(i)))
        .collect();
    let mut quiet = |_: &str| true;
    while rows.iter().any(|r| !r.done) {
        let offset = cache.len();
        let logits = model
            .forward_last(&input, offset, Some(&mut cache))?
            .to_dtype(DType::F32)?;
        let mut next = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        if !constraints.is_empty() {
            let scores = logits.to_vec2::<f32>()?;
            for (i, row) in rows.iter_mut().enumerate() {
                if let Some((c, state)) = row.guide().filter(|_| !row.done) {
                    match c.best_allowed(state, &scores[i], 1).first() {
                        Some(&id) => next[i] = id,
                        None => row.halt(StopReason::NoValidToken),
                    }
                }
            }
        }
        for (row, &id) in rows.iter_mut().zip(&next) {
            if !row.done {
                row.push(id, &stops, cfg, &mut quiet)?;
            }
        }
        // Finished rows keep decoding (their outputs are ignored): one shape for all.
        input = Tensor::from_vec(next, (prompts.len(), 1), dev)?;
    }
    rows.into_iter()
        .zip(prompts)
        .map(|(r, p)| r.finish(p.len(), &mut quiet))
        .collect()
}

/// One sequence being decoded: what it produced and whether it has stopped.
struct Decoding<'t> {
    stream: crate::tokenizer::TokenStream<'t>,
    text: String,
    ids: Vec<u32>,
    stop: StopReason,
    done: bool,
    /// The constraint and where the query stands under it.
    guide: Option<(&'t SqlConstraint, SqlState)>,
}

impl<'t> Decoding<'t> {
    fn new(tok: &'t Tokenizer, constraint: Option<&'t SqlConstraint>) -> Self {
        Decoding {
            stream: tok.stream(true),
            text: String::new(),
            ids: Vec::new(),
            stop: StopReason::MaxTokens,
            done: false,
            guide: constraint.map(|c| (c, c.start())),
        }
    }

    fn guide(&self) -> Option<(&'t SqlConstraint, &SqlState)> {
        self.guide.as_ref().map(|(c, s)| (*c, s))
    }

    fn halt(&mut self, why: StopReason) {
        (self.stop, self.done) = (why, true);
    }

    /// Take the next id: stop at a stop id, a stop string (cut before it), the
    /// token budget, or when `on_token` asks to.
    fn push(
        &mut self,
        next: u32,
        stops: &[u32],
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> Result<()> {
        if self.ids.len() >= cfg.max_new_tokens {
            self.done = true;
            return Ok(());
        }
        if stops.contains(&next) {
            (self.stop, self.done) = (StopReason::Eos, true);
            return Ok(());
        }
        self.ids.push(next);
        if let Some((c, state)) = &mut self.guide {
            c.advance(state, next);
        }
        let piece = self.stream.push(next)?;
        let before = self.text.len();
        self.text.push_str(&piece);
        if cut_at_stop_string(&mut self.text, &cfg.stop_strings) {
            if self.text.len() > before {
                on_token(&self.text[before..]);
            }
            (self.stop, self.done) = (StopReason::StopString, true);
        } else if !piece.is_empty() && !on_token(&piece) {
            (self.stop, self.done) = (StopReason::Cancelled, true);
        } else if self.guide.as_ref().is_some_and(|(_, s)| s.ended) {
            (self.stop, self.done) = (StopReason::EndOfQuery, true);
        } else if self.ids.len() >= cfg.max_new_tokens {
            self.done = true;
        }
        Ok(())
    }

    fn finish(mut self, prompt_tokens: usize, on_token: &mut dyn FnMut(&str) -> bool) -> Result<Generation> {
        // Out of budget inside a query: keep its longest whole beginning.
        if let Some((c, state)) = &self.guide {
            let unfinished = matches!(self.stop, StopReason::MaxTokens | StopReason::NoValidToken);
            if unfinished && !c.grammar().is_complete(&state.text) {
                if let Some((k, tail)) = c.finish(state) {
                    self.ids.truncate(k);
                    self.text = self.stream_text()? + &tail;
                    return Ok(self.into_generation(prompt_tokens));
                }
            }
        }
        if self.stop != StopReason::StopString {
            let rest = self.stream.finish()?;
            if !rest.is_empty() {
                self.text.push_str(&rest);
                on_token(&rest);
            }
        }
        Ok(self.into_generation(prompt_tokens))
    }

    /// The text of the ids kept.
    fn stream_text(&self) -> Result<String> {
        self.stream.tokenizer().decode(&self.ids, true)
    }

    fn into_generation(self, prompt_tokens: usize) -> Generation {
        Generation {
            ids: self.ids,
            text: self.text,
            stop: self.stop,
            prompt_tokens,
        }
    }
}

/// Cut `text` before the first stop string it contains; true if one was found.
fn cut_at_stop_string(text: &mut String, stops: &[String]) -> bool {
    let first = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min();
    match first {
        Some(i) => {
            text.truncate(i);
            true
        }
        None => false,
    }
}

/// A live or finished hypothesis of beam search.
#[derive(Clone)]
struct Beam {
    ids: Vec<u32>,
    /// Sum of log-probabilities.
    score: f64,
    /// The query so far, under a constraint.
    sql: Option<SqlState>,
}

impl Beam {
    /// Length-normalised score (transformers' default length penalty 1.0).
    fn normalised(&self) -> f64 {
        self.score / self.ids.len().max(1) as f64
    }
}

/// Beam search with `num_beams` hypotheses decoded as one batch sharing one
/// cache. Returns the best ids and whether they end the query (`;`).
fn beam_search(
    model: &Model,
    prompt_ids: &[u32],
    cfg: &GenerationConfig,
    stops: &[u32],
    constraint: Option<&SqlConstraint>,
) -> Result<(Vec<u32>, bool)> {
    let n = cfg.num_beams;
    let dev = model.device();
    let mut cache: Cache = model.new_cache();
    let prompt = Tensor::new(prompt_ids, dev)?.unsqueeze(0)?;
    let logits = model.forward_last(&prompt, 0, Some(&mut cache))?;
    // All beams start from the single prompt row.
    cache.select_rows(&Tensor::zeros(n, DType::U32, dev)?)?;
    let mut logprobs = log_softmax_rows(&logits)?;
    let mut beams = vec![Beam {
        ids: vec![],
        score: 0.0,
        sql: constraint.map(SqlConstraint::start),
    }];
    let mut finished: Vec<Beam> = Vec::new();
    for _ in 0..cfg.max_new_tokens {
        // Candidates over all live beams, best first.
        let mut cands: Vec<(f64, usize, u32)> = Vec::new();
        for (b, beam) in beams.iter().enumerate() {
            let row = &logprobs[b];
            let top: Vec<u32> = match (constraint, &beam.sql) {
                (Some(c), Some(state)) => c.best_allowed(state, row, 2 * n),
                _ => {
                    let mut top: Vec<u32> = (0..row.len() as u32).collect();
                    let k = (2 * n).min(top.len());
                    top.select_nth_unstable_by(k - 1, |a, b| row[*b as usize].total_cmp(&row[*a as usize]));
                    top.truncate(k);
                    top
                }
            };
            for tok in top {
                cands.push((beam.score + row[tok as usize] as f64, b, tok));
            }
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut next: Vec<Beam> = Vec::new();
        let mut parents: Vec<u32> = Vec::new();
        for (score, b, tok) in cands {
            let mut ids = beams[b].ids.clone();
            ids.push(tok);
            let mut sql = beams[b].sql.clone();
            if let (Some(c), Some(state)) = (constraint, sql.as_mut()) {
                if !stops.contains(&tok) {
                    c.advance(state, tok);
                }
            }
            let beam = Beam { ids, score, sql };
            if stops.contains(&tok) || beam.sql.as_ref().is_some_and(|s| s.ended) {
                finished.push(beam);
            } else if next.len() < n {
                next.push(beam);
                parents.push(b as u32);
            }
            if next.len() == n {
                break;
            }
        }
        beams = next;
        let best_live = beams.iter().map(Beam::normalised).fold(f64::NEG_INFINITY, f64::max);
        finished.sort_by(|a, b| b.normalised().total_cmp(&a.normalised()));
        finished.truncate(n);
        if beams.is_empty() || (finished.len() == n && finished[n - 1].normalised() >= best_live) {
            break;
        }
        // Reorder the cache rows to follow the surviving beams, then step.
        let rows = Tensor::new(parents.as_slice(), dev)?;
        cache.select_rows(&rows)?;
        let last: Vec<u32> = beams.iter().map(|b| *b.ids.last().unwrap_or(&0)).collect();
        let input = Tensor::new(last.as_slice(), dev)?.unsqueeze(1)?;
        let offset = cache.len();
        let logits = model.forward_last(&input, offset, Some(&mut cache))?;
        logprobs = log_softmax_rows(&logits)?;
    }
    let best = finished
        .into_iter()
        .chain(beams)
        .max_by(|a, b| a.normalised().total_cmp(&b.normalised()));
    Ok(best.map_or((vec![], false), |b| (b.ids, b.sql.is_some_and(|s| s.ended))))
}

fn log_softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let lp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    Ok(lp.to_vec2::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meaningless_settings_are_refused() {
        assert!(GenerationConfig::default().validate().is_ok());
        for bad in [
            GenerationConfig {
                temperature: f64::NAN,
                ..Default::default()
            },
            GenerationConfig {
                temperature: -1.0,
                ..Default::default()
            },
            GenerationConfig {
                top_p: -3.0,
                ..Default::default()
            },
            GenerationConfig {
                top_p: 0.0,
                ..Default::default()
            },
            GenerationConfig {
                top_p: f64::NAN,
                ..Default::default()
            },
            GenerationConfig {
                num_beams: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
