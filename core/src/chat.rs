//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template`
//! or `tokenizer_config.json`'s `chat_template`) rendered with minijinja the way
//! transformers' `apply_chat_template` does (trim_blocks, lstrip_blocks,
//! `raise_exception`, Python string methods through minijinja-contrib's pycompat).
//!
//! Fallback when a model ships no template ([`ChatTemplate::fallback`]):
//! * ChatML (`<|im_start|>role\n…<|im_end|>\n`) when the vocabulary has
//!   `<|im_start|>` and `<|im_end|>`;
//! * otherwise Mistral's `<s>[INST] … [/INST]` (a system message is prefixed to
//!   the first user turn, separated by a blank line).

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// One chat turn (`role` is `system`, `user` or `assistant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Where a template came from (for `--show-prompt` and metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateOrigin {
    /// The model's own template.
    Model,
    /// Built-in ChatML fallback.
    ChatMl,
    /// Built-in Mistral `[INST]` fallback.
    MistralInst,
    /// A template given by the caller.
    Custom,
}

/// Built-in ChatML, as SmolLM2/Qwen use (no default system line).
pub const CHATML_TEMPLATE: &str = "{%- for message in messages -%}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}";

/// Built-in Mistral instruct format.
pub const MISTRAL_INST_TEMPLATE: &str = "{%- set sys = namespace(text='') -%}\
{{- bos_token -}}\
{%- for message in messages -%}\
{%- if message['role'] == 'system' -%}{%- set sys.text = message['content'] + '\\n\\n' -%}\
{%- elif message['role'] == 'user' -%}{{ '[INST] ' + sys.text + message['content'] + ' [/INST]' }}{%- set sys.text = '' -%}\
{%- elif message['role'] == 'assistant' -%}{{ message['content'] + eos_token }}\
{%- else -%}{{ raise_exception('unknown role ' + message['role']) }}\
{%- endif -%}\
{%- endfor -%}";

/// A compiled chat template plus the special-token texts it refers to.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    origin: TemplateOrigin,
    bos_token: String,
    eos_token: String,
}

impl Clone for ChatTemplate {
    fn clone(&self) -> Self {
        // Recompiling cannot fail: the source compiled once already.
        Self::compile(self.source.clone(), self.origin, &self.bos_token, &self.eos_token)
            .expect("template compiled before")
    }
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

fn raise_exception(msg: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are the texts the template
    /// sees as `bos_token`/`eos_token`.
    pub fn new(source: impl Into<String>, bos_token: &str, eos_token: &str) -> Result<Self> {
        Self::compile(source.into(), TemplateOrigin::Custom, bos_token, eos_token)
    }

    fn compile(source: String, origin: TemplateOrigin, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        // transformers renders with these Jinja settings.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.clone())
            .map_err(|e| Error::Template(format!("does not compile: {e}")))?;
        Ok(ChatTemplate {
            env,
            source,
            origin,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    fn special_texts(tok: &Tokenizer) -> (String, String) {
        let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or_default();
        (text(tok.bos_id()), text(tok.eos_id()))
    }

    /// Built-in ChatML.
    pub fn chatml(tok: &Tokenizer) -> Self {
        let (bos, eos) = Self::special_texts(tok);
        Self::compile(CHATML_TEMPLATE.into(), TemplateOrigin::ChatMl, &bos, &eos).expect("built-in template compiles")
    }

    /// Built-in Mistral `[INST]`.
    pub fn mistral_inst(tok: &Tokenizer) -> Self {
        let (bos, eos) = Self::special_texts(tok);
        Self::compile(MISTRAL_INST_TEMPLATE.into(), TemplateOrigin::MistralInst, &bos, &eos)
            .expect("built-in template compiles")
    }

    /// The documented fallback: ChatML when the vocabulary has its markers,
    /// else Mistral `[INST]`.
    pub fn fallback(tok: &Tokenizer) -> Self {
        if tok.token_to_id("<|im_start|>").is_some() && tok.token_to_id("<|im_end|>").is_some() {
            Self::chatml(tok)
        } else {
            Self::mistral_inst(tok)
        }
    }

    /// The model's template from its source text, or the fallback if `None`.
    pub fn from_source_or_fallback(source: Option<&str>, tok: &Tokenizer) -> Result<Self> {
        match source {
            Some(src) if !src.trim().is_empty() => {
                let (bos, eos) = Self::special_texts(tok);
                Self::compile(src.to_string(), TemplateOrigin::Model, &bos, &eos)
            }
            _ => Ok(Self::fallback(tok)),
        }
    }

    /// From GGUF metadata (`tokenizer.chat_template`), else the fallback.
    pub fn from_gguf_metadata(md: &HashMap<String, Value>, tok: &Tokenizer) -> Result<Self> {
        let src = match md.get("tokenizer.chat_template") {
            Some(v) => Some(
                v.to_string()
                    .map_err(|_| Error::Template("GGUF `tokenizer.chat_template` is not a string".into()))?,
            ),
            None => None,
        };
        Self::from_source_or_fallback(src.map(|s| s.as_str()), tok)
    }

    /// From a `tokenizer_config.json` (its `chat_template`: a string, or a list
    /// of `{name, template}` of which `default` is taken), else the fallback.
    pub fn from_tokenizer_config(config_json: &[u8], tok: &Tokenizer) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_slice(config_json).map_err(|e| Error::Template(format!("tokenizer_config.json: {e}")))?;
        let src = match v.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        Self::from_source_or_fallback(src.as_deref(), tok)
    }

    /// Renders the conversation. `add_generation_prompt` appends the
    /// assistant header (ChatML `<|im_start|>assistant\n`).
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| Error::Template(format!("render failed: {e}")))
    }

    /// Splits a finished conversation into (prompt, answer): the prompt is
    /// `messages` rendered with the generation prompt; the answer is the text
    /// the template adds for the assistant turn `reply`, cut right after the
    /// first end-of-turn/EOS text (so the loss covers the reply and one stop
    /// token, not the template's trailing newline). If the template writes no
    /// EOS after the reply, the EOS text is appended.
    pub fn split_turn(&self, messages: &[ChatMessage], reply: &str) -> Result<(String, String)> {
        let prompt = self.render(messages, true)?;
        let mut all = messages.to_vec();
        all.push(ChatMessage::assistant(reply));
        let full = self.render(&all, false)?;
        let rest = full.strip_prefix(prompt.as_str()).ok_or_else(|| {
            Error::Template("the rendered conversation does not start with the rendered prompt".into())
        })?;
        // Templates often `trim` the content, so look for the trimmed reply.
        let reply = reply.trim();
        let reply_at = rest
            .find(reply)
            .ok_or_else(|| Error::Template("the assistant reply does not appear in the rendered text".into()))?;
        let after_reply = reply_at + reply.len();
        let stop = [self.eos_token.as_str(), "<|im_end|>", "<|eot_id|>", "</s>"]
            .into_iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| rest[after_reply..].find(s).map(|p| after_reply + p + s.len()))
            .min();
        let answer = match stop {
            Some(end) => rest[..end].to_string(),
            None => format!("{}{}", &rest[..after_reply], self.eos_token),
        };
        Ok((prompt, answer))
    }

    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn origin(&self) -> TemplateOrigin {
        self.origin
    }
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }
}
