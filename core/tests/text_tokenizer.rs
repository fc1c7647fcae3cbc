//! Tokenizer parity: GGUF-built SmolLM2 tokenizer vs transformers' ids, the
//! Mistral tokenizer.json, a llama/SentencePiece GGUF build, and streaming.

mod common;
use common::{shared, smollm2_gguf as model_path};

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use sqlora_core::tokenizer::{GgufPre, Tokenizer};

fn gguf_metadata() -> HashMap<String, Value> {
    let path = model_path();
    let mut f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Content::read(&mut f).expect("read GGUF").metadata
}

fn reference() -> serde_json::Value {
    let p = shared().join("peer/out/smollm2_reference.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn smollm2_gguf_matches_transformers_ids_and_round_trips() {
    let tok = Tokenizer::from_gguf_metadata(&gguf_metadata()).unwrap();
    assert!(tok.notes().is_empty(), "{:?}", tok.notes());
    let r = reference();
    let fixed = r["fixed_strings"].as_array().unwrap();
    assert!(fixed.len() >= 5);
    for case in fixed {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text, false).unwrap(), ids(&case["ids"]), "{text:?}");
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&case["ids_with_special"]),
            "{text:?} with special tokens"
        );
        let decoded = tok.decode(&ids(&case["ids"]), false).unwrap();
        assert_eq!(decoded, case["decoded"].as_str().unwrap());
        assert_eq!(decoded, text, "round trip");
    }
    // The whole chat prompt, special tokens included.
    let prompt = r["prompt_text"].as_str().unwrap();
    assert_eq!(tok.encode(prompt, false).unwrap(), ids(&r["prompt_ids"]));
    assert_eq!(tok.decode(&ids(&r["prompt_ids"]), false).unwrap(), prompt);

    // Special ids as transformers reports them.
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.pad_id(), Some(2));
    assert!(!tok.add_bos());
    assert_eq!(tok.vocab_size(), 49152);
    assert!(tok.stop_ids().contains(&2));
    assert_eq!(tok.token_text(2).as_deref(), Some("<|im_end|>"));
    // Control tokens are special: skipped on request.
    assert_eq!(tok.decode(&[1, 4093, 198, 2020, 2], true).unwrap(), "user\nHow");
}

#[test]
fn smollm2_gguf_matches_its_tokenizer_json() {
    // transformers wrote its own tokenizer.json for the same model; both must agree.
    let gguf = Tokenizer::from_gguf_metadata(&gguf_metadata()).unwrap();
    let json = Tokenizer::from_json_file(shared().join("peer/out/smollm2-tokenizer/tokenizer.json")).unwrap();
    assert_eq!(json.bos_id(), Some(1));
    assert_eq!(json.eos_id(), Some(2));
    let texts = [
        "SELECT T1.name, count(*) FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id GROUP BY 1 HAVING count(*) >= 2",
        "Table singer: singer_id(number) PK, name(text), age(number)\n\tCountry's 2024 \"x\"  ",
        "It's 12.5% — naïve café 🍕🍕 ΑΒΓ\r\n\r\n<|im_start|>assistant\n",
        "   leading and trailing   ",
    ];
    for t in texts {
        assert_eq!(gguf.encode(t, false).unwrap(), json.encode(t, false).unwrap(), "{t:?}");
    }
}

#[test]
fn mistral_tokenizer_json_encodes_inst() {
    let path = shared().join("data/tokenizers/mistral-7b-v0.1/tokenizer.json");
    let tok = Tokenizer::from_json_file(&path).unwrap();
    // transformers' reference (SOURCES.md) counts without BOS.
    assert_eq!(tok.encode("[INST]", false).unwrap(), vec![733, 16289, 28793]);
    // With special tokens the post-processor prepends <s> = 1.
    assert_eq!(tok.encode("[INST]", true).unwrap(), vec![1, 733, 16289, 28793]);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    let ids = tok.encode("[INST] How many singers? [/INST]", false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), "[INST] How many singers? [/INST]");
}

/// A llama (SentencePiece) GGUF as llama.cpp's converter writes it, rebuilt
/// from Mistral's tokenizer.json: pieces in id order, byte tokens type 6,
/// <unk> type 2, <s></s> type 3. Scores: SentencePiece BPE merges the pair
/// whose result has the highest score, so a merged piece's score is minus the
/// rank of the merge producing it (pieces no merge produces, like single
/// characters, get a very low score, as `▁▁` has -1e9 in the real model).
fn mistral_as_gguf_metadata() -> HashMap<String, Value> {
    let path = shared().join("data/tokenizers/mistral-7b-v0.1/tokenizer.json");
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let vocab = j["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    let types: Vec<Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Value::I32(match i {
                0 => 2,
                1 | 2 => 3,
                _ if t.starts_with("<0x") && t.len() == 6 => 6,
                _ => 1,
            })
        })
        .collect();
    let mut md = HashMap::new();
    md.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
    md.insert(
        "tokenizer.ggml.tokens".into(),
        Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
    );
    let mut scores = vec![-1e9f32; tokens.len()];
    for (rank, m) in j["model"]["merges"].as_array().unwrap().iter().enumerate() {
        let merged = match m {
            serde_json::Value::String(s) => s.replacen(' ', "", 1),
            serde_json::Value::Array(p) => {
                format!("{}{}", p[0].as_str().unwrap(), p[1].as_str().unwrap())
            }
            _ => unreachable!(),
        };
        let id = vocab[&merged].as_u64().unwrap() as usize;
        scores[id] = scores[id].max(-(rank as f32));
    }
    md.insert(
        "tokenizer.ggml.scores".into(),
        Value::Array(scores.into_iter().map(Value::F32).collect()),
    );
    md.insert("tokenizer.ggml.token_type".into(), Value::Array(types));
    md.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(1));
    md.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(2));
    md.insert("tokenizer.ggml.unknown_token_id".into(), Value::U32(0));
    md
}

#[test]
fn llama_sentencepiece_gguf_matches_mistral_tokenizer_json() {
    let gguf = Tokenizer::from_gguf_metadata(&mistral_as_gguf_metadata()).unwrap();
    let json = Tokenizer::from_json_file(shared().join("data/tokenizers/mistral-7b-v0.1/tokenizer.json")).unwrap();
    assert_eq!(gguf.encode("[INST]", false).unwrap(), vec![733, 16289, 28793]);
    assert!(gguf.add_bos(), "llama GGUFs add BOS by default");
    assert_eq!(gguf.encode("[INST]", true).unwrap(), vec![1, 733, 16289, 28793]);
    let texts = [
        "How many singers do we have?",
        "SELECT count(*) FROM singer WHERE age > 30;",
        "<s>[INST] Database schema:\nCREATE TABLE singer(singer_id int)\n\nQuestion: x [/INST]",
        "Ünïcödé 日本語 🙂 1234567890\ttab",
        "  two leading spaces",
    ];
    for t in texts {
        let a = gguf.encode(t, false).unwrap();
        assert_eq!(a, json.encode(t, false).unwrap(), "{t:?}");
        assert_eq!(gguf.decode(&a, false).unwrap(), json.decode(&a, false).unwrap());
    }
    assert_eq!(
        gguf.decode(&gguf.encode("SELECT 1 🙂", false).unwrap(), true).unwrap(),
        "SELECT 1 🙂"
    );
}

#[test]
fn streaming_decoder_reassembles_text_across_multibyte_tokens() {
    let tok = Tokenizer::from_gguf_metadata(&gguf_metadata()).unwrap();
    let text = "Ünïcödé 日本語 🙂 SELECT name FROM singer; -- ok";
    let ids = tok.encode(text, false).unwrap();
    let mut stream = tok.stream(true);
    let mut out = String::new();
    let mut pieces = Vec::new();
    for &id in &ids {
        let piece = stream.push(id).unwrap();
        assert!(!piece.contains('\u{FFFD}'), "broken character in {piece:?}");
        out.push_str(&piece);
        pieces.push(piece);
    }
    out.push_str(&stream.finish().unwrap());
    assert_eq!(out, text);
    // The emoji spans several byte-level tokens: some pushes emit nothing.
    assert!(pieces.iter().any(|p| p.is_empty()));

    // SentencePiece: leading-space handling stays right mid-stream.
    let sp = Tokenizer::from_gguf_metadata(&mistral_as_gguf_metadata()).unwrap();
    let text = "SELECT T1.name FROM singer 🙂 AS T1";
    let mut stream = sp.stream(true);
    let mut out = String::new();
    for id in sp.encode(text, true).unwrap() {
        out.push_str(&stream.push(id).unwrap());
    }
    out.push_str(&stream.finish().unwrap());
    assert_eq!(out, text);
}

#[test]
fn gguf_pre_fallback_and_errors() {
    assert_eq!(GgufPre::from_name("smollm"), (GgufPre::DigitsByteLevel, true));
    assert_eq!(GgufPre::from_name("llama-bpe"), (GgufPre::Llama3, true));
    assert_eq!(GgufPre::from_name("something-new"), (GgufPre::Gpt2, false));

    let mut md = gguf_metadata();
    md.insert("tokenizer.ggml.pre".into(), Value::String("something-new".into()));
    let tok = Tokenizer::from_gguf_metadata(&md).unwrap();
    assert_eq!(tok.notes().len(), 1);
    assert!(tok.notes()[0].contains("something-new"));
    // GPT-2 regex groups digits: "30" is one pre-token now (ids differ from smollm's 35, 32).
    assert_eq!(
        tok.decode(&tok.encode("age > 30", false).unwrap(), false).unwrap(),
        "age > 30"
    );

    md.remove("tokenizer.ggml.merges");
    let err = Tokenizer::from_gguf_metadata(&md).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.merges"), "{err}");

    let mut md = HashMap::new();
    md.insert("tokenizer.ggml.model".into(), Value::String("bert".into()));
    md.insert("tokenizer.ggml.tokens".into(), Value::Array(vec![]));
    let err = Tokenizer::from_gguf_metadata(&md).unwrap_err().to_string();
    assert!(err.contains("unsupported GGUF tokenizer model `bert`"), "{err}");

    let err = Tokenizer::from_json_bytes(b"{not json", None).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}
