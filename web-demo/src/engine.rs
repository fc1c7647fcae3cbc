//! The model side of the demo, free of browser APIs so it is tested natively:
//! core's [`Text2Sql`] (the same prompt and SQL extraction as the CLI and the
//! evaluator) plus the browser's concerns: a pasted schema, the page's
//! options, and timings taken with the caller's clock.

use sqlora_core::generate::{GenerationConfig, StopReason};
use sqlora_core::pipeline::Text2Sql;
use sqlora_core::schema::Schema;

use candle_core::Tensor;

use crate::protocol::{BenchStats, GenOptions, GenStats};

pub struct Engine {
    t2s: Text2Sql,
}

impl Engine {
    /// `origin` names the file in errors (the URL in the browser).
    pub fn from_gguf_bytes(bytes: Vec<u8>, origin: &str) -> Result<Self, String> {
        let t2s = Text2Sql::from_gguf_bytes(bytes, origin).map_err(|e| e.to_string())?;
        Ok(Engine { t2s })
    }

    /// What the model calls itself (`general.name`), else its URL.
    pub fn name(&self) -> &str {
        &self.t2s.name
    }

    /// The prompt for a pasted schema (CREATE TABLE or `table: col, col`),
    /// built with the prompt settings the model was exported with.
    pub fn prompt(&self, schema: &str, question: &str) -> Result<String, String> {
        let schema = Schema::parse(schema).map_err(|e| e.to_string())?;
        self.t2s.prompt(&schema, question, &[]).map_err(|e| e.to_string())
    }

    /// Generate the SQL for `prompt`, constrained to the pasted `schema` it
    /// shows (when given and `options.constrain`). `now_ms` is the caller's
    /// clock (there is no `std::time` in the browser); `on_token` gets each
    /// piece of text and returns false to stop.
    pub fn generate(
        &self,
        prompt: &str,
        schema: Option<&str>,
        options: &GenOptions,
        now_ms: &dyn Fn() -> f64,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenStats, String> {
        let cfg = GenerationConfig {
            max_new_tokens: options.max_new_tokens.max(1),
            temperature: options.temperature.max(0.0),
            top_p: options.top_p,
            seed: options.seed,
            constrain: options.constrain,
            ..GenerationConfig::default()
        };
        let schema = schema
            .map(|s| Schema::parse(s).map_err(|e| e.to_string()))
            .transpose()?;
        let start = now_ms();
        let mut first: Option<f64> = None;
        let mut callback = |piece: &str| {
            first.get_or_insert_with(now_ms);
            on_token(piece)
        };
        let answer = self
            .t2s
            .generate(prompt, schema.as_ref(), &cfg, &mut callback)
            .map_err(|e| e.to_string())?;
        let end = now_ms();
        let ttft = first.unwrap_or(end) - start;
        let decode_ms = end - start - ttft;
        let per_sec = |n: usize, ms: f64| {
            if ms > 0.0 {
                n as f64 * 1000.0 / ms
            } else {
                0.0
            }
        };
        let g = &answer.generation;
        Ok(GenStats {
            prompt_tokens: g.prompt_tokens,
            new_tokens: g.ids.len(),
            time_to_first_token_ms: ttft,
            total_ms: end - start,
            prompt_tps: per_sec(g.prompt_tokens, ttft),
            decode_tps: per_sec(g.ids.len().saturating_sub(1), decode_ms),
            stop: stop_name(g.stop).to_string(),
            sql: answer.sql,
            text: answer.completion,
        })
    }
}

impl Engine {
    /// Speed as `sqlora bench decode` measures it natively (same loop, so the
    /// browser/native ratio compares the kernels, not the harness): a forward
    /// over the whole prompt, then `new_tokens` greedy steps ignoring EOS.
    pub fn bench(
        &self,
        prompt: &str,
        new_tokens: usize,
        runs: usize,
        now_ms: &dyn Fn() -> f64,
    ) -> Result<BenchStats, String> {
        let err = |e: sqlora_core::Error| e.to_string();
        let cerr = |e: candle_core::Error| e.to_string();
        let model = &self.t2s.model;
        let ids = self.t2s.tokenizer.encode(prompt, false).map_err(err)?;
        if ids.is_empty() {
            return Err("empty benchmark prompt".into());
        }
        let (mut pp, mut tg) = (Vec::new(), Vec::new());
        for run in 0..=runs.max(1) {
            let mut cache = model.new_cache();
            let x = Tensor::new(ids.as_slice(), model.device())
                .and_then(|t| t.unsqueeze(0))
                .map_err(cerr)?;
            let t = now_ms();
            let logits = model.forward_last(&x, 0, Some(&mut cache)).map_err(err)?;
            let mut next = argmax(&logits)?;
            let pp_ms = now_ms() - t;
            let t = now_ms();
            for _ in 0..new_tokens {
                let x = Tensor::new(&[next], model.device())
                    .and_then(|t| t.unsqueeze(0))
                    .map_err(cerr)?;
                let logits = model.forward_last(&x, cache.len(), Some(&mut cache)).map_err(err)?;
                next = argmax(&logits)?;
            }
            let tg_ms = now_ms() - t;
            // Run 0 warms up the allocator and caches.
            if run > 0 {
                pp.push(ids.len() as f64 * 1000.0 / pp_ms.max(1e-3));
                tg.push(new_tokens as f64 * 1000.0 / tg_ms.max(1e-3));
            }
        }
        Ok(BenchStats {
            prompt_tokens: ids.len(),
            new_tokens,
            runs: pp.len(),
            prompt_tps: median(pp),
            decode_tps: median(tg),
        })
    }
}

fn argmax(logits: &Tensor) -> Result<u32, String> {
    logits
        .squeeze(0)
        .and_then(|l| l.argmax(0))
        .and_then(|i| i.to_scalar::<u32>())
        .map_err(|e| e.to_string())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn stop_name(s: StopReason) -> &'static str {
    match s {
        StopReason::Eos => "eos",
        StopReason::StopString => "stop_string",
        StopReason::MaxTokens => "max_tokens",
        StopReason::Cancelled => "cancelled",
        StopReason::EndOfQuery => "end_of_query",
        StopReason::NoValidToken => "no_valid_token",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default base model, located as every command finds it; a missing
    /// one fails the test with the command that fetches it.
    fn model_path() -> std::path::PathBuf {
        sqlora_core::default_model::existing().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn corrupt_bytes_give_a_message_naming_the_url() {
        let err = Engine::from_gguf_bytes(b"<!DOCTYPE html>".to_vec(), "http://x/m.gguf")
            .err()
            .unwrap();
        assert!(err.contains("http://x/m.gguf"), "{err}");
    }

    #[test]
    fn concert_singer_question_streams_an_answer() {
        let path = model_path();
        let bytes = std::fs::read(&path).unwrap();
        let engine = Engine::from_gguf_bytes(bytes, &path.display().to_string()).unwrap();
        let prompt = engine
            .prompt(crate::examples::CONCERT_SINGER, "How many singers do we have?")
            .unwrap();
        let t0 = std::time::Instant::now();
        let now = || t0.elapsed().as_secs_f64() * 1000.0;
        let mut streamed = String::new();
        let opts = GenOptions {
            max_new_tokens: 48,
            ..Default::default()
        };
        let stats = engine
            .generate(&prompt, Some(crate::examples::CONCERT_SINGER), &opts, &now, &mut |p| {
                streamed.push_str(p);
                true
            })
            .unwrap();
        assert_eq!(streamed, stats.text, "streamed pieces add up to the completion");
        // The prompt ends in the answer prefix (`SELECT` by default), and the
        // stream starts with it like the completion does. Whether the base
        // names `singer` is asserted for fine-tuned models only (browser test).
        let answer_prefix = &engine.t2s.settings.answer_prefix;
        assert!(prompt.ends_with(answer_prefix.as_str()) && stats.text.starts_with(answer_prefix.as_str()));
        assert_eq!(stats.sql, sqlora_core::prompt::extract_sql(&stats.text));
        assert!(stats.sql.to_ascii_uppercase().starts_with("SELECT"), "{}", stats.sql);
        let schema = Schema::parse(crate::examples::CONCERT_SINGER).unwrap();
        assert!(
            prompt.contains(&schema.render(engine.t2s.settings.schema_format)),
            "the schema is rendered by core as the model's prompt settings say"
        );
        assert!(stats.new_tokens > 0 && stats.time_to_first_token_ms > 0.0);
    }

    #[test]
    fn bench_decodes_the_requested_tokens() {
        let path = model_path();
        let engine = Engine::from_gguf_bytes(std::fs::read(&path).unwrap(), "m").unwrap();
        let prompt = engine.prompt("t: a", "List a").unwrap();
        let t0 = std::time::Instant::now();
        let now = || t0.elapsed().as_secs_f64() * 1000.0;
        let b = engine.bench(&prompt, 4, 1, &now).unwrap();
        assert_eq!((b.new_tokens, b.runs), (4, 1));
        assert!(
            b.prompt_tokens > 10 && b.prompt_tps > 0.0 && b.decode_tps > 0.0,
            "{b:?}"
        );
        assert!(engine.bench("", 4, 1, &now).is_err());
    }

    #[test]
    fn stop_callback_cancels() {
        let path = model_path();
        let engine = Engine::from_gguf_bytes(std::fs::read(&path).unwrap(), "m").unwrap();
        let prompt = engine.prompt("t: a", "List a").unwrap();
        let mut n = 0;
        let stats = engine
            .generate(&prompt, None, &GenOptions::default(), &|| 0.0, &mut |_| {
                n += 1;
                n < 3
            })
            .unwrap();
        assert_eq!(stats.stop, "cancelled");
        assert_eq!(n, 3);
    }

    /// Writes the default base re-quantized to Q8_0 (for the browser/native
    /// benchmark) to `$SQLORA_Q8_OUT`, else `<tmp>/smollm2-q8_0.gguf`; the
    /// same as `sqlora export --quant q8_0`. Run with `--ignored`.
    #[test]
    #[ignore]
    fn write_q8_0_base_for_benchmarks() {
        use candle_core::quantized::GgmlDType;
        use sqlora_core::export::{export_gguf, ExportOptions};
        use sqlora_core::weights::GgufFile;
        let path = model_path();
        let out = std::env::var("SQLORA_Q8_OUT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir().join("smollm2-q8_0.gguf"));
        let t2s = Text2Sql::load(
            path.to_str().unwrap(),
            sqlora_core::weights::BaseFormat::AsStored,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let source = GgufFile::open(&path).unwrap();
        let opts = ExportOptions {
            quant: GgmlDType::Q8_0,
            fallback: GgmlDType::Q8_0,
            embed_quant: GgmlDType::Q8_0,
        };
        let mut file = std::io::BufWriter::new(std::fs::File::create(&out).unwrap());
        let report = export_gguf(&t2s.model, source.metadata(), &[], &opts, &mut file, &mut |_, _| {}).unwrap();
        drop(file);
        eprintln!("{}: {:?}", out.display(), report.type_counts());
        let back = Engine::from_gguf_bytes(std::fs::read(&out).unwrap(), "q8_0").unwrap();
        assert!(back.prompt("t: a", "List a").is_ok());
    }
}
