//! Chat templates: SmolLM2's own template reproduces transformers' prompt;
//! fallbacks, helpers and errors.

mod common;
use common::{shared, smollm2_gguf as model_path};

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use sqlora_core::chat::{ChatMessage, ChatTemplate, TemplateOrigin};
use sqlora_core::tokenizer::Tokenizer;

fn smollm2() -> (HashMap<String, Value>, Tokenizer) {
    let path = model_path();
    let mut f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let md = Content::read(&mut f).unwrap().metadata;
    let tok = Tokenizer::from_gguf_metadata(&md).unwrap();
    (md, tok)
}

fn reference() -> serde_json::Value {
    let p = shared().join("peer/out/smollm2_reference.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The peer's user turn (peer/common.py).
const USER: &str = "Database schema:\nCREATE TABLE singer(singer_id int, name text, age int)\n\nQuestion: How many singers are there?\nAnswer with a single SQLite query only.";

#[test]
fn smollm2_gguf_template_reproduces_reference_prompt() {
    let (md, tok) = smollm2();
    let tmpl = ChatTemplate::from_gguf_metadata(&md, &tok).unwrap();
    assert_eq!(tmpl.origin(), TemplateOrigin::Model);
    let r = reference();
    let prompt = tmpl.render(&[ChatMessage::user(USER)], true).unwrap();
    assert_eq!(prompt, r["prompt_text"].as_str().unwrap());
    let ids: Vec<u32> = r["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(tok.encode(&prompt, false).unwrap(), ids);
    assert_eq!(tok.encode_prompt(&prompt).unwrap(), ids);
    assert!(prompt.contains("You are a helpful AI assistant named SmolLM, trained by Hugging Face"));

    // An explicit system message replaces the default one.
    let p = tmpl
        .render(
            &[
                ChatMessage::system("Translate the question to SQL."),
                ChatMessage::user("q"),
            ],
            true,
        )
        .unwrap();
    assert_eq!(
        p,
        "<|im_start|>system\nTranslate the question to SQL.<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    );
    // Without the generation prompt, no assistant header.
    assert!(!tmpl
        .render(&[ChatMessage::user("q")], false)
        .unwrap()
        .ends_with("assistant\n"));
}

#[test]
fn smollm2_tokenizer_config_template_matches_gguf_template() {
    let (_, tok) = smollm2();
    let jinja = std::fs::read_to_string(shared().join("peer/out/smollm2-tokenizer/chat_template.jinja")).unwrap();
    let cfg = serde_json::json!({ "chat_template": jinja }).to_string();
    let tmpl = ChatTemplate::from_tokenizer_config(cfg.as_bytes(), &tok).unwrap();
    assert_eq!(tmpl.origin(), TemplateOrigin::Model);
    assert_eq!(
        tmpl.render(&[ChatMessage::user(USER)], true).unwrap(),
        reference()["prompt_text"].as_str().unwrap()
    );
    // A config without a template gives the ChatML fallback for this vocabulary.
    let fb = ChatTemplate::from_tokenizer_config(b"{}", &tok).unwrap();
    assert_eq!(fb.origin(), TemplateOrigin::ChatMl);
    assert_eq!(
        fb.render(&[ChatMessage::user("hi")], true).unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn split_turn_gives_answer_up_to_end_of_turn() {
    let (md, tok) = smollm2();
    let tmpl = ChatTemplate::from_gguf_metadata(&md, &tok).unwrap();
    let (prompt, answer) = tmpl.split_turn(&[ChatMessage::user("q")], "SELECT 1").unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\n"));
    assert_eq!(answer, "SELECT 1<|im_end|>");
}

#[test]
fn mistral_fallback_formats_inst_and_folds_system() {
    let tok = Tokenizer::from_json_file(shared().join("data/tokenizers/mistral-7b-v0.1/tokenizer.json")).unwrap();
    let tmpl = ChatTemplate::fallback(&tok);
    assert_eq!(tmpl.origin(), TemplateOrigin::MistralInst);
    let p = tmpl
        .render(
            &[ChatMessage::system("Be brief."), ChatMessage::user("How many?")],
            true,
        )
        .unwrap();
    assert_eq!(p, "<s>[INST] Be brief.\n\nHow many? [/INST]");
    let ids = tok.encode_prompt(&p).unwrap();
    assert_eq!(ids[0], 1, "BOS comes from the template text");
    assert_eq!(&ids[1..4], &[733, 16289, 28793], "▁[INST] as Mistral's own tokenizer");
    // Plain tokenizers would lose the word prefix after the <s> text.
    assert_eq!(&tok.encode(&p, false).unwrap()[..2], &[1, 28792]);
    let (prompt, answer) = tmpl.split_turn(&[ChatMessage::user("q")], "SELECT 1").unwrap();
    assert_eq!(prompt, "<s>[INST] q [/INST]");
    assert_eq!(answer, "SELECT 1</s>");
    let err = tmpl
        .render(&[ChatMessage::new("tool", "x")], true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown role tool"), "{err}");
}

#[test]
fn hf_template_helpers_work() {
    let (_, tok) = smollm2();
    // raise_exception, loop variables, .strip(), bos/eos tokens: what HF templates use.
    let src = "{{ bos_token }}{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}\
{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}\
{{ m['role'] }}:{{ m['content'].strip() }}{% if not loop.last %}|{% endif %}{% endfor %}{{ eos_token }}";
    let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
    assert_eq!(t.origin(), TemplateOrigin::Custom);
    assert_eq!(
        t.render(&[ChatMessage::user("  a "), ChatMessage::assistant("b\n")], false)
            .unwrap(),
        "<s>user:a|assistant:b</s>"
    );
    let err = t
        .render(&[ChatMessage::user("a"), ChatMessage::user("b")], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Conversation roles must alternate"), "{err}");

    let err = ChatTemplate::new("{% for %}", "", "").unwrap_err().to_string();
    assert!(err.contains("does not compile"), "{err}");
    let err = ChatTemplate::from_tokenizer_config(b"{nope", &tok)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer_config.json"), "{err}");
}
