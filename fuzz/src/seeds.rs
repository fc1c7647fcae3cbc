//! Small valid inputs for each target, made here rather than read from
//! disk: a tiny Llama model as GGUF and as safetensors, an adapter for it,
//! Spider-style `tables.json`, pasted schemas and queries.

use std::collections::HashMap;
use std::io::Cursor;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use sqlora_core::config::ModelConfig;
use sqlora_core::export::{export_gguf, ExportOptions};
use sqlora_core::model::Model;
use sqlora_core::weights::{BaseFormat, HfCheckpoint};

/// Between `adapter_config.json` and the safetensors bytes in an adapter input.
pub const ADAPTER_SPLIT: &[u8] = b"\n\0\0\n";

/// The tiny model: 1 layer, hidden 32 (one quantization block), 2 heads of
/// 16 sharing 1 KV head, feed-forward 64, tied embeddings.
pub const HF_CONFIG: &str = r#"{"model_type": "llama", "vocab_size": 70, "hidden_size": 32,
"intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
"num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 64,
"rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true,
"hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2}"#;

const ADAPTER_CONFIG: &str = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4,
"lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "bias": "none",
"task_type": "CAUSAL_LM"}"#;

/// Spider's entry for `pets_1`, as `tables.json` holds it.
pub const TABLES_JSON: &str = r#"[{"column_names": [[-1, "*"], [0, "student id"], [0, "last name"], [0, "first name"], [0, "age"], [0, "sex"], [0, "major"], [0, "advisor"], [0, "city code"], [1, "student id"], [1, "pet id"], [2, "pet id"], [2, "pet type"], [2, "pet age"], [2, "weight"]], "column_names_original": [[-1, "*"], [0, "StuID"], [0, "LName"], [0, "Fname"], [0, "Age"], [0, "Sex"], [0, "Major"], [0, "Advisor"], [0, "city_code"], [1, "StuID"], [1, "PetID"], [2, "PetID"], [2, "PetType"], [2, "pet_age"], [2, "weight"]], "column_types": ["text", "number", "text", "text", "number", "text", "number", "number", "text", "number", "number", "number", "text", "number", "number"], "db_id": "pets_1", "foreign_keys": [[9, 1], [10, 11]], "primary_keys": [1, 11], "table_names": ["student", "has pet", "pets"], "table_names_original": ["Student", "Has_Pet", "Pets"]}]"#;

/// Pasted schemas in both accepted forms; the first is also the SQL target's schema.
pub const SCHEMAS: [&str; 2] = [
    "CREATE TABLE stadium (Stadium_ID int PRIMARY KEY, Location text, Name text, Capacity int);\n\
     CREATE TABLE singer (Singer_ID int PRIMARY KEY, Name text, Country text, Age int);\n\
     CREATE TABLE concert (concert_ID int PRIMARY KEY, concert_Name text, Stadium_ID int REFERENCES stadium(Stadium_ID), Year text);\n\
     CREATE TABLE \"singer in concert\" (concert_ID int, Singer_ID int, PRIMARY KEY (concert_ID, Singer_ID), FOREIGN KEY (Singer_ID) REFERENCES singer(Singer_ID));",
    "# pets\nstudent: StuID PK, LName, Age\nhas_pet: StuID -> student.StuID, PetID -> pets.PetID\npets: PetID PK, PetType, pet_age\n",
];

/// Queries over `SCHEMAS[0]`, read-only and otherwise.
pub const QUERIES: [&str; 6] = [
    "SELECT count(*) FROM singer",
    "SELECT T1.Name, max(T2.Capacity) FROM singer AS T1 JOIN stadium AS T2 ON T1.Singer_ID = T2.Stadium_ID WHERE T1.Age > 20 GROUP BY T1.Name HAVING count(*) >= 2 ORDER BY T1.Name DESC LIMIT 3",
    "SELECT Name FROM singer WHERE Country = 'France' UNION SELECT Name FROM stadium WHERE Capacity BETWEEN 1 AND 5000",
    "SELECT concert_Name FROM concert WHERE Stadium_ID IN (SELECT Stadium_ID FROM stadium WHERE Location LIKE '%a%') AND Year != \"2014\"",
    "SELECT CASE WHEN Age < 30 THEN 'young' ELSE 'old' END, avg(Age) FROM singer;",
    "DELETE FROM singer; SELECT 1",
];

fn tensor(rows: usize, cols: usize, salt: u64) -> Tensor {
    let mut s = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).expect("shape matches")
}

/// The tiny model's tensors by HF name, shaped as [`HF_CONFIG`] says.
fn hf_tensors() -> Vec<(String, Tensor)> {
    let cfg = ModelConfig::from_hf_json(HF_CONFIG, "config.json").expect("the seed config parses");
    let h = cfg.hidden_size;
    let mut t = vec![("model.embed_tokens.weight".to_string(), tensor(cfg.vocab_size, h, 1))];
    for (i, (name, [o, n])) in cfg.linear_shapes().into_iter().enumerate() {
        t.push((format!("model.layers.0.{name}.weight"), tensor(o, n, 10 + i as u64)));
    }
    let ones = || Tensor::ones(h, candle_core::DType::F32, &Device::Cpu).expect("ones");
    t.push(("model.layers.0.input_layernorm.weight".to_string(), ones()));
    t.push(("model.layers.0.post_attention_layernorm.weight".to_string(), ones()));
    t.push(("model.norm.weight".to_string(), ones()));
    t
}

/// `model.safetensors` of the tiny model.
pub fn model_safetensors() -> Vec<u8> {
    safetensors::serialize(hf_tensors(), None).expect("serialises")
}

/// The tiny model from its `model.safetensors` bytes and [`HF_CONFIG`].
pub fn tiny_model(safetensors: &[u8]) -> sqlora_core::Result<Model> {
    let ck = HfCheckpoint::new(
        HF_CONFIG,
        "config.json".into(),
        vec![("model.safetensors".into(), safetensors.to_vec().into())],
        None,
        None,
        "fuzz".into(),
    )?;
    let weights = ck.weights(BaseFormat::AsStored, &Device::Cpu)?;
    Model::new(ck.config().clone(), weights, &Device::Cpu)
}

/// An adapter input: [`ADAPTER_CONFIG`], [`ADAPTER_SPLIT`], the weights.
pub fn adapter() -> Vec<u8> {
    let p = "base_model.model.model.layers.0.self_attn";
    let tensors = vec![
        (format!("{p}.q_proj.lora_A.weight"), tensor(2, 32, 30)),
        (format!("{p}.q_proj.lora_B.weight"), tensor(32, 2, 31)),
        (format!("{p}.v_proj.lora_A.weight"), tensor(2, 32, 32)),
        (format!("{p}.v_proj.lora_B.weight"), tensor(16, 2, 33)),
    ];
    let mut out = ADAPTER_CONFIG.as_bytes().to_vec();
    out.extend_from_slice(ADAPTER_SPLIT);
    out.extend(safetensors::serialize(tensors, None).expect("serialises"));
    out
}

/// `(config, weights)` of an adapter input (see [`adapter`]).
pub fn split_adapter(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(ADAPTER_SPLIT.len()).position(|w| w == ADAPTER_SPLIT) {
        Some(i) => (&data[..i], &data[i + ADAPTER_SPLIT.len()..]),
        None => (ADAPTER_CONFIG.as_bytes(), data),
    }
}

/// The tiny model as a GGUF file, written by the exporter (llama.cpp's
/// layout, Q8_0 projections, f32 norms) with a byte-level BPE tokenizer of
/// 70 tokens and a chat template.
pub fn gguf() -> Vec<u8> {
    let model = tiny_model(&model_safetensors()).expect("the seed model loads");
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    tokens.extend(('a'..='z').chain('A'..='Z').chain('0'..='9').map(String::from));
    tokens.extend(["Ġ", "Ġa", "ab", "(", ")"].map(String::from));
    let types = (0..tokens.len())
        .map(|i| Value::I32(if i < 3 { 3 } else { 1 }))
        .collect();
    let strings = |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
    let tokenizer: HashMap<String, Value> = [
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", strings(&["Ġ a", "a b"])),
        (
            "tokenizer.chat_template",
            Value::String(
                "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}".into(),
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let opts = ExportOptions {
        quant: GgmlDType::Q8_0,
        fallback: GgmlDType::Q8_0,
        embed_quant: GgmlDType::Q8_0,
    };
    let mut out = Cursor::new(Vec::new());
    export_gguf(&model, &tokenizer, &[], &opts, &mut out, &mut |_, _| {}).expect("exports to memory");
    out.into_inner()
}
