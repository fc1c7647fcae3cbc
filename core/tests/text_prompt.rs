//! Prompts: the peer's exact prompt through SmolLM2's template, settings
//! round trip, training split and masking, cutting to max_length, SQL
//! extraction.

mod common;
use common::{shared, smollm2_gguf as model_path};

use candle_core::quantized::gguf_file::Content;
use sqlora_core::chat::ChatTemplate;
use sqlora_core::prompt::{extract_sql, FewShot, PromptSettings};
use sqlora_core::schema::{SchemaFormat, SpiderTables};
use sqlora_core::tokenizer::Tokenizer;

fn smollm2() -> (ChatTemplate, Tokenizer) {
    let path = model_path();
    let mut f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let md = Content::read(&mut f).unwrap().metadata;
    let tok = Tokenizer::from_gguf_metadata(&md).unwrap();
    (ChatTemplate::from_gguf_metadata(&md, &tok).unwrap(), tok)
}

fn reference() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(shared().join("peer/out/smollm2_reference.json")).unwrap()).unwrap()
}

#[test]
fn default_settings_reproduce_the_peer_prompt() {
    let (tmpl, tok) = smollm2();
    // The peer's prompt has no answer prefix; everything before it is identical.
    let s = PromptSettings {
        answer_prefix: String::new(),
        ..PromptSettings::default()
    };
    let prompt = s
        .prompt(
            &tmpl,
            "CREATE TABLE singer(singer_id int, name text, age int)",
            "How many singers are there?",
            &[],
        )
        .unwrap();
    let r = reference();
    assert_eq!(prompt, r["prompt_text"].as_str().unwrap());
    let ids: Vec<u32> = r["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(tok.encode_prompt(&prompt).unwrap(), ids);
}

#[test]
fn settings_round_trip_as_json() {
    let s = PromptSettings {
        system: Some("Translate the question to SQL.".into()),
        schema_format: SchemaFormat::CreateTable,
        ..PromptSettings::default()
    };
    let back = PromptSettings::from_json(&s.to_json()).unwrap();
    assert_eq!(back, s);
    assert!(s.to_json().contains("\"create_table\""));
    // Missing keys take defaults.
    assert_eq!(PromptSettings::from_json("{}").unwrap(), PromptSettings::default());
    let err = PromptSettings::from_json(r#"{"user_template": "no placeholder"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("{question}"), "{err}");
    // Through GGUF metadata.
    let mut md = std::collections::HashMap::new();
    assert_eq!(PromptSettings::from_gguf_metadata(&md).unwrap(), None);
    let (k, v) = s.to_gguf_metadata();
    md.insert(k, v);
    assert_eq!(PromptSettings::from_gguf_metadata(&md).unwrap(), Some(s.clone()));
    let err = PromptSettings::from_json("[").unwrap_err().to_string();
    assert!(err.contains("prompt settings"), "{err}");
}

#[test]
fn few_shot_examples_sit_between_schema_and_question() {
    let s = PromptSettings::default();
    let shots = [FewShot {
        question: "How many concerts?".into(),
        sql: "SELECT count(*) FROM concert".into(),
    }];
    let msg = s.user_message("singer(Singer_ID number PK)", "How many singers?", &shots);
    assert_eq!(
        msg,
        "Database schema:\nsinger(Singer_ID number PK)\n\nExamples:\nQuestion: How many concerts?\nSQL: SELECT count(*) FROM concert\n\nQuestion: How many singers?\nAnswer with a single SQLite query only."
    );
    // With a system line, it comes first.
    let s = PromptSettings {
        system: Some("sys".into()),
        ..Default::default()
    };
    let m = s.messages("x", "q", &[]);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].role, "system");
}

#[test]
fn training_example_masks_the_prompt_and_ends_with_eos() {
    let (tmpl, tok) = smollm2();
    let tables = SpiderTables::from_file(shared().join("data/spider/tables.json")).unwrap();
    let schema = tables.schema("concert_singer").unwrap();
    let s = PromptSettings::default();
    let sql = "SELECT count(*) FROM singer";
    let t = s
        .training_text(&tmpl, &schema.to_compact(), "How many singers do we have?", &[], sql)
        .unwrap();
    // The default answer prefix moves from the answer into the prompt.
    assert!(t.prompt.ends_with("<|im_start|>assistant\nSELECT"));
    assert_eq!(t.answer, " count(*) FROM singer<|im_end|>");
    let inference = s
        .prompt(&tmpl, &schema.to_compact(), "How many singers do we have?", &[])
        .unwrap();
    assert_eq!(inference, t.prompt, "training and generation see the same prompt");
    let err = s
        .training_text(&tmpl, "x", "q", &[], "WITH a AS (SELECT 1) SELECT * FROM a")
        .unwrap_err();
    assert!(err.to_string().contains("answer prefix"), "{err}");

    let ex = s
        .encode_example(&tmpl, &tok, schema, "How many singers do we have?", &[], sql, 256)
        .unwrap()
        .unwrap();
    assert!(!ex.schema_cut());
    assert_eq!(
        &ex.input_ids[..ex.prompt_len],
        tok.encode_prompt(&t.prompt).unwrap().as_slice()
    );
    let answer = &ex.input_ids[ex.prompt_len..];
    assert_eq!(tok.decode(answer, false).unwrap(), t.answer);
    assert_eq!(*answer.last().unwrap(), 2, "ends with <|im_end|>");
    let labels = ex.labels();
    assert!(labels[..ex.prompt_len].iter().all(|&l| l == -100));
    assert_eq!(
        labels[ex.prompt_len..].iter().map(|&l| l as u32).collect::<Vec<_>>(),
        answer
    );
}

#[test]
fn long_examples_drop_shots_and_cut_the_schema_to_its_budget_never_question_or_answer() {
    let (tmpl, tok) = smollm2();
    let tables = SpiderTables::from_file(shared().join("data/spider/tables.json")).unwrap();
    // A big schema: college_2 has 11 tables.
    let schema = tables.schema("college_2").unwrap();
    let s = PromptSettings {
        schema_budget: Some(60),
        ..PromptSettings::default()
    };
    let q = "What is the name of the instructor with the highest salary?";
    let sql = "SELECT name FROM instructor ORDER BY salary DESC LIMIT 1";
    let shots = [FewShot {
        question: "How many courses?".into(),
        sql: "SELECT count(*) FROM course".into(),
    }];
    let fitted = s.schema_text(schema, q, &tok).unwrap();
    assert!(fitted.was_cut() && tok.encode(&fitted.text, false).unwrap().len() <= 60);
    assert!(
        fitted.text.contains("instructor(ID text PK"),
        "the named table survives: {}",
        fitted.text
    );
    assert!(fitted.text.contains("salary"), "{}", fitted.text);

    let full = s
        .encode_example(&tmpl, &tok, schema, q, &shots, sql, 4096)
        .unwrap()
        .unwrap();
    assert_eq!(full.dropped_shots, 0);
    assert!(full.schema_cut());
    let no_shots = s
        .encode_example(&tmpl, &tok, schema, q, &[], sql, 4096)
        .unwrap()
        .unwrap();
    let ex = s
        .encode_example(&tmpl, &tok, schema, q, &shots, sql, no_shots.input_ids.len())
        .unwrap()
        .unwrap();
    assert_eq!(ex.dropped_shots, 1);
    assert_eq!(ex.input_ids, no_shots.input_ids);
    let text = tok.decode(&ex.input_ids, false).unwrap();
    assert!(text.contains(q), "question kept");
    assert!(text.ends_with(&format!("{sql}<|im_end|>")), "answer kept");
    // Too long even without shots: dropped, never cut further.
    assert!(s
        .encode_example(&tmpl, &tok, schema, q, &shots, sql, no_shots.input_ids.len() - 1)
        .unwrap()
        .is_none());
}

#[test]
fn training_prompts_are_inference_prompts_whatever_the_answer() {
    let (tmpl, tok) = smollm2();
    let tables = SpiderTables::from_file(shared().join("data/spider/tables.json")).unwrap();
    let schema = tables.schema("college_2").unwrap();
    let s = PromptSettings {
        schema_budget: Some(120),
        ..PromptSettings::default()
    };
    // The question names the student table but not `tot_cred`, which one answer needs.
    let q = "Which student has the most credits?";
    let inference = s
        .prompt(&tmpl, &s.schema_text(schema, q, &tok).unwrap().text, q, &[])
        .unwrap();
    for sql in [
        "SELECT name FROM student ORDER BY tot_cred DESC LIMIT 1",
        "SELECT name FROM student LIMIT 1",
        "SELECT T1.name FROM student AS T1 JOIN takes AS T2 ON T1.id = T2.id GROUP BY T1.id ORDER BY count(*) DESC LIMIT 1",
    ] {
        let ex = s.encode_example(&tmpl, &tok, schema, q, &[], sql, 4096).unwrap().unwrap();
        assert!(ex.schema_cut());
        assert_eq!(
            tok.decode(&ex.input_ids[..ex.prompt_len], false).unwrap(),
            inference,
            "the training prompt for `{sql}` is the inference prompt"
        );
    }
}

/// Not a check: how many Spider training examples fit 256 tokens uncut with
/// each schema format (run with --ignored --nocapture).
#[test]
#[ignore]
fn spider_train_fit_stats() {
    let (tmpl, tok) = smollm2();
    let tables = SpiderTables::from_file(shared().join("data/spider/tables.json")).unwrap();
    let text = std::fs::read_to_string(shared().join("data/spider/train_spider.jsonl")).unwrap();
    let exs: Vec<serde_json::Value> = text
        .lines()
        .take(600)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for format in [SchemaFormat::Compact, SchemaFormat::CreateTable] {
        let s = PromptSettings {
            schema_format: format,
            ..Default::default()
        };
        let (mut uncut, mut cut, mut dropped) = (0, 0, 0);
        for ex in &exs {
            let Some(schema) = tables.get(ex["db_id"].as_str().unwrap()) else {
                continue;
            };
            match s
                .encode_example(
                    &tmpl,
                    &tok,
                    schema,
                    ex["question"].as_str().unwrap(),
                    &[],
                    ex["query"].as_str().unwrap(),
                    256,
                )
                .unwrap()
            {
                Some(e) if e.schema_cut() => cut += 1,
                Some(_) => uncut += 1,
                None => dropped += 1,
            }
        }
        eprintln!(
            "{format:?}: {uncut} uncut, {cut} cut, {dropped} dropped of {}",
            exs.len()
        );
    }
}

#[test]
fn extract_sql_handles_fences_labels_prose_and_stops() {
    let cases = [
        (
            "SELECT count(*) FROM singer<|im_end|>\nextra",
            "SELECT count(*) FROM singer",
        ),
        ("SELECT count(*) FROM singer;", "SELECT count(*) FROM singer"),
        (
            "```sql\nSELECT name\nFROM singer\n```\nThis returns names.",
            "SELECT name\nFROM singer",
        ),
        (
            "To count singers:\n\n```\nSELECT count(*) FROM singer;\n```",
            "SELECT count(*) FROM singer",
        ),
        ("SQL: SELECT age FROM singer", "SELECT age FROM singer"),
        (
            "SQLite query: select age from singer; -- done",
            "select age from singer",
        ),
        (
            "You can use the following query: SELECT name FROM singer WHERE age > 30. It lists names.",
            "SELECT name FROM singer WHERE age > 30",
        ),
        (
            "SELECT name FROM singer\nThis query lists every singer.",
            "SELECT name FROM singer",
        ),
        (
            "SELECT name FROM singer WHERE name = 'a;b'; SELECT 2",
            "SELECT name FROM singer WHERE name = 'a;b'",
        ),
        ("SELECT 1\n\nExplanation: ...", "SELECT 1"),
        (
            "  WITH t AS (SELECT 1 AS x) SELECT x FROM t  ",
            "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
        ),
        ("```sql\nSELECT name FROM singer", "SELECT name FROM singer"),
        ("I don't know.", "I don't know."),
        ("", ""),
    ];
    for (input, want) in cases {
        assert_eq!(extract_sql(input), want, "{input:?}");
    }
}
