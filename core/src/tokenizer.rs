//! Text ↔ token ids: a thin wrapper over the `tokenizers` crate that can be
//! built either from a `tokenizer.json` or from a GGUF file's own metadata, plus
//! an incremental decoder for streaming.
//!
//! GGUF construction (why it is hand-built): candle's GGUF tokenizer helper
//! maps unknown `tokenizer.ggml.pre` values (SmolLM2's `smollm`) to GPT-2 with a
//! prefix space, which gives wrong ids, and it does not exist on wasm32. The
//! rules here follow what transformers/llama.cpp do:
//!
//! * `tokenizer.ggml.model = "gpt2"` → byte-level BPE from `tokens` + `merges`.
//!   The pre-tokenizer is chosen by `tokenizer.ggml.pre` (see [`GgufPre`]):
//!   `smollm`/`starcoder`/`refact` → `Digits(individual)` + `ByteLevel(no prefix
//!   space)`; `llama-bpe`/`llama3`… and `qwen2`… → their split regex +
//!   `ByteLevel`; `gpt-2`, `default` and **any unknown value** → plain GPT-2
//!   `ByteLevel` regex without prefix space (the fallback is recorded in
//!   [`Tokenizer::notes`]).
//! * `tokenizer.ggml.model = "llama"` (SentencePiece, e.g. Mistral) → BPE whose
//!   merge order comes from the piece scores (a merge's rank is its merged
//!   piece's score, as transformers' SentencePiece converter does), byte
//!   fallback, `Metaspace` pre-tokenizer (prefix `▁` on the first word unless
//!   `add_space_prefix` is false) and the SentencePiece decoder chain.
//! * Tokens of type 3 (control) become special added tokens (skipped by
//!   `decode(.., skip_special = true)`); type 4 (user-defined) become normal
//!   added tokens.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::{Error, Result};

/// GGUF `token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_UNKNOWN: i32 = 2;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Tokens that end a turn or a text in the model families we support; any of
/// them present in the vocabulary stops generation (see [`Tokenizer::stop_ids`]).
const END_TOKENS: &[&str] = &[
    "<|im_end|>",
    "</s>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|end|>",
];

/// A tokenizer plus the ids generation and prompting need.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
    /// Prepend BOS in `encode(.., add_special_tokens = true)` (GGUF builds only;
    /// a `tokenizer.json` does this through its own post-processor).
    add_bos: bool,
    /// Human-readable remarks about fallbacks taken while building.
    notes: Vec<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("add_bos", &self.add_bos)
            .field("notes", &self.notes)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Wraps an already-built `tokenizers::Tokenizer`, with explicit special ids.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
        pad_id: Option<u32>,
    ) -> Self {
        Tokenizer {
            inner,
            bos_id,
            eos_id,
            pad_id,
            add_bos: false,
            notes: Vec::new(),
        }
    }

    /// From the bytes of a `tokenizer.json`, optionally with the bytes of the
    /// matching `tokenizer_config.json` (which names bos/eos/pad). Without a
    /// config, bos/eos are guessed from well-known token names.
    pub fn from_json_bytes(json: &[u8], config: Option<&[u8]>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(|e| tok_err(format!("tokenizer.json: {e}")))?;
        let config: Option<serde_json::Value> = match config {
            Some(b) => Some(serde_json::from_slice(b).map_err(|e| tok_err(format!("tokenizer_config.json: {e}")))?),
            None => None,
        };
        let named = |key: &str| -> Option<u32> {
            let v = config.as_ref()?.get(key)?;
            let name = v.as_str().or_else(|| v.get("content")?.as_str())?;
            inner.token_to_id(name)
        };
        let first_present = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos_id = named("bos_token")
            .or_else(|| first_present(&["<s>", "<|begin_of_text|>", "<|im_start|>", "<|endoftext|>"]));
        let eos_id = named("eos_token").or_else(|| first_present(END_TOKENS));
        let pad_id = named("pad_token");
        Ok(Tokenizer {
            inner,
            bos_id,
            eos_id,
            pad_id,
            add_bos: false,
            notes: Vec::new(),
        })
    }

    /// From a `tokenizer.json` path; reads `tokenizer_config.json` beside it
    /// when present.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_json_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let json = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config = path
            .parent()
            .map(|d| d.join("tokenizer_config.json"))
            .and_then(|p| std::fs::read(p).ok());
        Self::from_json_bytes(&json, config.as_deref()).map_err(|e| Error::file(path, e.to_string()))
    }

    /// From GGUF metadata (as `candle_core::quantized::gguf_file::Content`
    /// holds it). See the module docs for the rules.
    pub fn from_gguf_metadata(md: &HashMap<String, Value>) -> Result<Self> {
        let meta = GgufMeta(md);
        let model = meta.str("tokenizer.ggml.model")?.unwrap_or("gpt2");
        let tokens = meta
            .str_array("tokenizer.ggml.tokens")?
            .ok_or_else(|| tok_err("GGUF metadata has no `tokenizer.ggml.tokens`"))?;
        let types = meta.i32_array("tokenizer.ggml.token_type")?;
        if let Some(t) = &types {
            if t.len() != tokens.len() {
                return Err(tok_err(format!(
                    "GGUF `tokenizer.ggml.token_type` has {} entries for {} tokens",
                    t.len(),
                    tokens.len()
                )));
            }
        }
        let mut notes = Vec::new();
        let (mut inner, default_add_bos) = match model {
            "gpt2" => {
                let merges = meta
                    .str_array("tokenizer.ggml.merges")?
                    .ok_or_else(|| tok_err("GGUF gpt2 tokenizer has no `tokenizer.ggml.merges`"))?;
                let pre = meta.str("tokenizer.ggml.pre")?.unwrap_or("default");
                let (pre_kind, known) = GgufPre::from_name(pre);
                if !known {
                    notes.push(format!(
                        "unknown tokenizer.ggml.pre `{pre}`: using the GPT-2 byte-level regex without prefix space"
                    ));
                }
                (build_byte_level_bpe(&tokens, merges, pre_kind)?, false)
            }
            "llama" => {
                let scores = meta
                    .f32_array("tokenizer.ggml.scores")?
                    .ok_or_else(|| tok_err("GGUF llama tokenizer has no `tokenizer.ggml.scores`"))?;
                if scores.len() != tokens.len() {
                    return Err(tok_err(format!(
                        "GGUF `tokenizer.ggml.scores` has {} entries for {} tokens",
                        scores.len(),
                        tokens.len()
                    )));
                }
                let unk = meta.u32("tokenizer.ggml.unknown_token_id")?.unwrap_or(0);
                let space_prefix = meta.bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
                (
                    build_sentencepiece_bpe(&tokens, &scores, types.as_deref(), unk, space_prefix)?,
                    true,
                )
            }
            other => {
                return Err(tok_err(format!(
                    "unsupported GGUF tokenizer model `{other}` (supported: gpt2, llama)"
                )))
            }
        };

        // Control / unknown / user-defined tokens are matched before the model
        // sees the text, exactly as transformers' GGUF loader adds them.
        if let Some(types) = &types {
            let added: Vec<AddedToken> = tokens
                .iter()
                .zip(types)
                .filter_map(|(tok, &ty)| match ty {
                    TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN => {
                        Some(AddedToken::from(tok.to_string(), true).normalized(false))
                    }
                    TOKEN_TYPE_USER_DEFINED => Some(AddedToken::from(tok.to_string(), false).normalized(false)),
                    _ => None,
                })
                .collect();
            // Added tokens already in the vocabulary keep their ids.
            inner.add_tokens(added).map_err(tok_err)?;
        }

        let bos_id = meta.u32("tokenizer.ggml.bos_token_id")?;
        let eos_id = meta.u32("tokenizer.ggml.eos_token_id")?;
        let pad_id = meta.u32("tokenizer.ggml.padding_token_id")?;
        let add_bos = meta.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos) && bos_id.is_some();
        Ok(Tokenizer {
            inner,
            bos_id,
            eos_id,
            pad_id,
            add_bos,
            notes,
        })
    }

    /// Token ids of `text`. Special-token text (`<|im_start|>`) is always
    /// recognised; `add_special_tokens` adds BOS (or whatever the tokenizer's
    /// post-processor adds). Chat prompts are rendered with BOS in the
    /// template text, so encode them with `add_special_tokens = false`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, add_special_tokens).map_err(tok_err)?;
        let mut ids = enc.get_ids().to_vec();
        if add_special_tokens && self.add_bos {
            if let Some(bos) = self.bos_id {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
        }
        Ok(ids)
    }

    /// Token ids of a rendered chat prompt (special-token text recognised, no
    /// BOS added). A BOS written at the start of the text becomes the BOS id
    /// and the rest is encoded as the start of a text: SentencePiece models
    /// then get their `▁` word prefix (`<s>[INST]` → 1, 733 = `▁[`, as Mistral's
    /// own tokenizer gives) where plain `tokenizers` would not (28792 = `[`).
    /// For byte-level models this is the same as `encode(text, false)`.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        if let Some(bos) = self.bos_id {
            if let Some(bos_text) = self.token_text(bos).filter(|t| !t.is_empty()) {
                if let Some(rest) = text.strip_prefix(bos_text.as_str()) {
                    let mut ids = vec![bos];
                    if !rest.is_empty() {
                        ids.extend(self.encode(rest, false)?);
                    }
                    return Ok(ids);
                }
            }
        }
        self.encode(text, false)
    }

    /// Text of `ids`; `skip_special` drops special tokens (BOS/EOS/control).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }
    /// Padding id: the declared pad token, else EOS (what training pads with).
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id.or(self.eos_id)
    }
    /// Whether `encode(.., true)` prepends BOS on its own (GGUF `add_bos_token`).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Ids that end generation: EOS plus the end-of-turn tokens present.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos_id.into_iter().collect();
        for name in END_TOKENS {
            if let Some(id) = self.inner.token_to_id(name) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids
    }
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
    /// Text of a token as it appears in a prompt (special tokens included),
    /// e.g. `<|im_end|>` for SmolLM2's EOS.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.decode(&[id], false).ok()
    }
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    /// Remarks about fallbacks taken while building (empty when none).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
    /// A streaming decoder over this tokenizer.
    pub fn stream(&self, skip_special: bool) -> TokenStream<'_> {
        TokenStream::new(self, skip_special)
    }
}

/// Incremental decoding: push ids one by one and get the text each adds.
///
/// Why not decode each id alone: byte-level tokens can hold part of a UTF-8
/// character, and SentencePiece decoders strip/merge spaces depending on the
/// neighbours. So we decode a short window (from the last emitted boundary)
/// and emit only the new suffix once it no longer ends in an incomplete
/// character (U+FFFD).
pub struct TokenStream<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    ids: Vec<u32>,
    /// Start of the window whose text was already emitted up to `read`.
    prefix: usize,
    /// Ids before this index have been emitted.
    read: usize,
}

impl<'a> TokenStream<'a> {
    pub fn new(tok: &'a Tokenizer, skip_special: bool) -> Self {
        TokenStream {
            tok,
            skip_special,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds one id; returns the text it completes (possibly empty while a
    /// multi-byte character is still incomplete).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = self.tok.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = self.tok.decode(&self.ids[self.prefix..], self.skip_special)?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&before) {
            let new = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(new)
        } else {
            Ok(String::new())
        }
    }

    /// Text still held back (an incomplete character at the very end).
    pub fn finish(&mut self) -> Result<String> {
        let before = self.tok.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = self.tok.decode(&self.ids[self.prefix..], self.skip_special)?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now.get(before.len()..).unwrap_or_default().to_string())
    }

    /// All ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    pub fn tokenizer(&self) -> &'a Tokenizer {
        self.tok
    }
}

/// The pre-tokenizer families of byte-level (gpt2) GGUF tokenizers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufPre {
    /// `Digits(individual)` + GPT-2 `ByteLevel` (smollm, starcoder, refact).
    DigitsByteLevel,
    /// GPT-2's own regex inside `ByteLevel` (gpt-2, default, unknown).
    Gpt2,
    /// Llama 3's split regex, then `ByteLevel` without its regex.
    Llama3,
    /// Qwen2's split regex (single digits), then `ByteLevel` without regex.
    Qwen2,
}

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl GgufPre {
    /// The family for a `tokenizer.ggml.pre` value, and whether it was known.
    pub fn from_name(pre: &str) -> (GgufPre, bool) {
        match pre {
            "smollm" | "starcoder" | "refact" => (GgufPre::DigitsByteLevel, true),
            "gpt-2" | "gpt2" | "default" => (GgufPre::Gpt2, true),
            "llama-bpe" | "llama3" | "llama-v3" | "falcon3" | "dbrx" | "smaug-bpe" => (GgufPre::Llama3, true),
            "qwen2" | "deepseek-r1-qwen" => (GgufPre::Qwen2, true),
            _ => (GgufPre::Gpt2, false),
        }
    }

    fn pre_tokenizer(self) -> Result<PreTokenizerWrapper> {
        let split = |re: &str| -> Result<PreTokenizerWrapper> {
            Ok(Split::new(
                SplitPattern::Regex(re.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tok_err)?
            .into())
        };
        Ok(match self {
            GgufPre::DigitsByteLevel => {
                PreSequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into()
            }
            GgufPre::Gpt2 => ByteLevel::new(false, true, true).into(),
            GgufPre::Llama3 => {
                PreSequence::new(vec![split(LLAMA3_REGEX)?, ByteLevel::new(false, true, false).into()]).into()
            }
            GgufPre::Qwen2 => {
                PreSequence::new(vec![split(QWEN2_REGEX)?, ByteLevel::new(false, true, false).into()]).into()
            }
        })
    }
}

fn vocab_map(tokens: &[&str]) -> Result<Vocab> {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        // Duplicates happen in some GGUFs (e.g. padding tokens); the first wins,
        // as in llama.cpp.
        vocab.entry(t.to_string()).or_insert(id as u32);
    }
    Ok(vocab)
}

fn build_byte_level_bpe(tokens: &[&str], merges: Vec<&str>, pre: GgufPre) -> Result<tokenizers::Tokenizer> {
    let vocab = vocab_map(tokens)?;
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            // Split at the first space after position 0 (llama.cpp's rule).
            m.char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(p, _)| (m[..p].to_string(), m[p + 1..].to_string()))
                .ok_or_else(|| tok_err(format!("GGUF merge #{i} `{m}` has no space")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(tok_err)?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(pre.pre_tokenizer()?));
    tk.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tk)
}

/// SentencePiece (llama) vocabulary → BPE with merges ranked by piece score.
fn build_sentencepiece_bpe(
    tokens: &[&str],
    scores: &[f32],
    types: Option<&[i32]>,
    unk_id: u32,
    space_prefix: bool,
) -> Result<tokenizers::Tokenizer> {
    let vocab = vocab_map(tokens)?;
    // Only normal pieces (type 1, or all when types are absent) take part in
    // merges; byte tokens (<0x41>) are reached through byte fallback.
    let is_normal = |i: usize| types.is_none_or(|t| t[i] == 1);
    let mut merges: Vec<(f32, u32, u32, String, String)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if !is_normal(i) {
            continue;
        }
        for (p, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(p);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                if is_normal(li as usize) && is_normal(ri as usize) {
                    merges.push((scores[i], li, ri, l.to_string(), r.to_string()));
                }
            }
        }
    }
    // Higher score first; ties by the pieces' ids (transformers' order).
    merges.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
    });
    let merges = merges.into_iter().map(|(_, _, _, l, r)| (l, r)).collect();
    let unk = tokens
        .get(unk_id as usize)
        .ok_or_else(|| tok_err(format!("GGUF unknown_token_id {unk_id} is out of range")))?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unk.to_string())
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(tok_err)?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let scheme = if space_prefix {
        PrependScheme::First
    } else {
        PrependScheme::Never
    };
    tk.with_pre_tokenizer(Some(Metaspace::new('▁', scheme, false)));
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(tok_err)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tk.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tk)
}

/// Typed access to GGUF metadata with errors naming the key.
struct GgufMeta<'a>(&'a HashMap<String, Value>);

impl<'a> GgufMeta<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key)
    }
    fn bad(key: &str, want: &str) -> Error {
        tok_err(format!("GGUF metadata `{key}` is not {want}"))
    }
    fn str(&self, key: &str) -> Result<Option<&'a str>> {
        self.get(key)
            .map(|v| {
                v.to_string()
                    .map(|s| s.as_str())
                    .map_err(|_| Self::bad(key, "a string"))
            })
            .transpose()
    }
    fn u32(&self, key: &str) -> Result<Option<u32>> {
        self.get(key)
            .map(|v| match v {
                Value::U32(x) => Ok(*x),
                Value::I32(x) if *x >= 0 => Ok(*x as u32),
                Value::U64(x) => u32::try_from(*x).map_err(|_| Self::bad(key, "a u32")),
                Value::I64(x) => u32::try_from(*x).map_err(|_| Self::bad(key, "a u32")),
                _ => Err(Self::bad(key, "an integer")),
            })
            .transpose()
    }
    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| v.to_bool().map_err(|_| Self::bad(key, "a bool")))
            .transpose()
    }
    fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        self.get(key)
            .map(|v| v.to_vec().map_err(|_| Self::bad(key, "an array")))
            .transpose()
    }
    fn str_array(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        self.array(key)?
            .map(|a| {
                a.iter()
                    .map(|v| {
                        v.to_string()
                            .map(|s| s.as_str())
                            .map_err(|_| Self::bad(key, "an array of strings"))
                    })
                    .collect()
            })
            .transpose()
    }
    fn i32_array(&self, key: &str) -> Result<Option<Vec<i32>>> {
        self.array(key)?
            .map(|a| {
                a.iter()
                    .map(|v| match v {
                        Value::I32(x) => Ok(*x),
                        Value::U32(x) => Ok(*x as i32),
                        Value::I8(x) => Ok(*x as i32),
                        Value::U8(x) => Ok(*x as i32),
                        _ => Err(Self::bad(key, "an array of integers")),
                    })
                    .collect()
            })
            .transpose()
    }
    fn f32_array(&self, key: &str) -> Result<Option<Vec<f32>>> {
        self.array(key)?
            .map(|a| {
                a.iter()
                    .map(|v| match v {
                        Value::F32(x) => Ok(*x),
                        Value::F64(x) => Ok(*x as f32),
                        _ => Err(Self::bad(key, "an array of floats")),
                    })
                    .collect()
            })
            .transpose()
    }
}
