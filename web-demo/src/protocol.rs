//! Messages between the page and the model worker. They travel as JSON strings
//! through `postMessage`: one serde type on each side instead of hand-built JS
//! objects, and the same types serve the leptos UI and the embedding API.

use serde::{Deserialize, Serialize};

/// Options of one generation, as the page's settings and the JS API's
/// `options` object give them (camelCase in JS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GenOptions {
    pub max_new_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// Only queries over the schema (core's constrained decoding); `false`
    /// lets the model write anything, to compare.
    pub constrain: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            max_new_tokens: 128,
            temperature: 0.0,
            top_p: 1.0,
            seed: 299_792_458,
            constrain: true,
        }
    }
}

/// Page → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Download (or take from the cache) and load the GGUF at `url`.
    Load { url: String },
    Generate {
        schema: String,
        question: String,
        options: GenOptions,
    },
    /// Remove every cached model file.
    ClearCache,
    /// Measure speed as `sqlora bench decode` does natively: one forward over
    /// `prompt` (already chat-formatted), then `new_tokens` greedy tokens with
    /// EOS ignored; median of `runs` after a warm-up run.
    Bench {
        prompt: String,
        new_tokens: usize,
        runs: usize,
    },
}

/// Which step failed, so the page can offer the right retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Download,
    Load,
    Generate,
    Cache,
}

/// Timings and result of one generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenStats {
    /// The SQL extracted from the completion.
    pub sql: String,
    /// The completion as decoded.
    pub text: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub time_to_first_token_ms: f64,
    pub total_ms: f64,
    /// Prompt tokens per second (prefill, up to the first token).
    pub prompt_tps: f64,
    /// New tokens per second after the first.
    pub decode_tps: f64,
    /// Why generation ended: eos, stop_string, max_tokens, cancelled,
    /// end_of_query (a `;` under constraints), no_valid_token.
    pub stop: String,
}

/// Result of [`ToWorker::Bench`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchStats {
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub runs: usize,
    pub prompt_tps: f64,
    pub decode_tps: f64,
}

/// Worker → page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker's wasm is running and listening; earlier messages would be lost.
    Ready,
    /// Download progress; `total` is unknown without a Content-Length.
    Progress {
        loaded: f64,
        total: Option<f64>,
    },
    Loaded {
        url: String,
        bytes: f64,
        from_cache: bool,
        download_ms: f64,
        load_ms: f64,
        model: String,
    },
    /// The exact prompt, once it is built (for "show prompt"; its token
    /// count comes with [`GenStats`]).
    Prompt {
        text: String,
    },
    /// A new piece of streamed text.
    Token {
        text: String,
    },
    Done {
        stats: GenStats,
    },
    CacheCleared {
        removed: usize,
    },
    BenchDone {
        stats: BenchStats,
    },
    Error {
        stage: Stage,
        message: String,
    },
}

impl ToWorker {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }
    pub fn from_json(s: &str) -> Result<Self, String> {
        serde_json::from_str(s).map_err(|e| format!("bad message to the worker: {e}"))
    }
}

impl FromWorker {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }
    pub fn from_json(s: &str) -> Result<Self, String> {
        serde_json::from_str(s).map_err(|e| format!("bad message from the worker: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_json() {
        let m = ToWorker::Generate {
            schema: "singer: id, name".into(),
            question: "How many?".into(),
            options: GenOptions {
                max_new_tokens: 7,
                ..Default::default()
            },
        };
        assert_eq!(ToWorker::from_json(&m.to_json()).unwrap(), m);
        let e = FromWorker::Error {
            stage: Stage::Download,
            message: "HTTP 404".into(),
        };
        assert!(e.to_json().contains(r#""stage":"download""#));
        assert_eq!(FromWorker::from_json(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn js_options_use_camel_case_and_defaults() {
        let o: GenOptions = serde_json::from_str(r#"{"maxNewTokens": 32}"#).unwrap();
        assert_eq!(o.max_new_tokens, 32);
        assert_eq!(o.temperature, 0.0);
        assert!(ToWorker::from_json(r#"{"type":"nope"}"#).is_err());
    }
}
