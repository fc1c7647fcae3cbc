//! Constrained decoding with the default base on Spider dev questions: every
//! answer is one read-only query over the question's schema, whichever way
//! it is decoded (greedy, batched, sampled, beam search).

mod common;

use candle_core::Device;
use sqlora_core::constrain::SqlGrammar;
use sqlora_core::generate::{GenerationConfig, StopReason};
use sqlora_core::pipeline::Text2Sql;
use sqlora_core::schema::{Schema, SpiderTables};
use sqlora_core::sqlcheck;
use sqlora_core::weights::BaseFormat;

/// The first dev question of each of the first `n` databases.
fn questions(n: usize) -> (SpiderTables, Vec<(String, String)>) {
    let spider = common::shared().join("data/spider");
    let tables = SpiderTables::from_file(spider.join("tables.json")).unwrap();
    let dev: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(spider.join("dev.json")).unwrap()).unwrap();
    let mut out: Vec<(String, String)> = Vec::new();
    for ex in &dev {
        let db = ex["db_id"].as_str().unwrap().to_string();
        if out.iter().all(|(d, _)| *d != db) {
            out.push((db, ex["question"].as_str().unwrap().to_string()));
        }
        if out.len() == n {
            break;
        }
    }
    (tables, out)
}

fn assert_query_over(sql: &str, schema: &Schema, what: &str) {
    let check = sqlcheck::check(sql, schema);
    assert!(check.is_ok(), "{what}: `{sql}`: {:?}", check.problems());
    assert!(SqlGrammar::new(schema).is_complete(sql), "{what}: `{sql}` is not whole");
}

#[test]
fn every_constrained_answer_is_a_query_over_the_schema() {
    let t2s = Text2Sql::load(
        &common::smollm2_gguf().display().to_string(),
        BaseFormat::AsStored,
        &Device::Cpu,
    )
    .unwrap();
    let (tables, qs) = questions(4);
    let greedy = GenerationConfig {
        max_new_tokens: 64,
        ..Default::default()
    };
    let mut unconstrained_bad = 0;
    for (db, q) in &qs {
        let schema = tables.schema(db).unwrap();
        let a = t2s.sql_for(schema, q, &greedy).unwrap();
        assert_query_over(&a.sql, schema, q);
        // Out of budget inside a query, it is cut or closed to a whole one.
        if a.generation.stop == StopReason::MaxTokens {
            eprintln!("closed at the budget: {}", a.sql);
        }
        let free = t2s
            .sql_for(
                schema,
                q,
                &GenerationConfig {
                    constrain: false,
                    ..greedy.clone()
                },
            )
            .unwrap();
        unconstrained_bad += !sqlcheck::check(&free.sql, schema).is_ok() as usize;
    }
    eprintln!(
        "unconstrained: {unconstrained_bad} of {} answers are not queries over the schema",
        qs.len()
    );

    let (db, q) = &qs[1];
    let schema = tables.schema(db).unwrap();
    for cfg in [
        GenerationConfig {
            temperature: 0.9,
            seed: 7,
            ..greedy.clone()
        },
        GenerationConfig {
            num_beams: 2,
            ..greedy.clone()
        },
    ] {
        let a = t2s.sql_for(schema, q, &cfg).unwrap();
        assert_query_over(&a.sql, schema, &format!("{q} ({cfg:?})"));
    }
}
