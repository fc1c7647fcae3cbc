//! The page: model loading, schema, question, streamed output, final SQL with
//! its check. All model work happens in the worker behind [`Client`].

use leptos::ev;
use leptos::prelude::*;
use std::cell::RefCell;

use crate::check::{self, CheckReport};
use crate::client::{page_base, Client};
use crate::examples::EXAMPLES;
use crate::highlight;
use crate::protocol::{FromWorker, GenOptions, GenStats, Stage, ToWorker};

/// Where the page looks for a model unless `?model=` or the field says otherwise
/// (the quickstart exports its fine-tuned model there).
pub const DEFAULT_MODEL_URL: &str = "models/sqlora.gguf";

thread_local! {
    static CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
}

fn send(msg: ToWorker) {
    CLIENT.with(|c| {
        if let Some(c) = c.borrow().as_ref() {
            c.send(msg)
        }
    });
}

#[derive(Debug, Clone, PartialEq)]
enum ModelState {
    Empty,
    Loading {
        loaded: f64,
        total: Option<f64>,
    },
    Ready {
        model: String,
        bytes: f64,
        from_cache: bool,
        load_ms: f64,
    },
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
struct Failure {
    stage: Stage,
    message: String,
}

/// Every piece of state the page shows; signals are `Copy`, so closures take them freely.
#[derive(Clone, Copy)]
struct State {
    model_url: RwSignal<String>,
    model: RwSignal<ModelState>,
    schema: RwSignal<String>,
    question: RwSignal<String>,
    max_tokens: RwSignal<usize>,
    temperature: RwSignal<f64>,
    /// Constrained decoding (only queries over the schema).
    constrain: RwSignal<bool>,
    generating: RwSignal<bool>,
    output: RwSignal<String>,
    stats: RwSignal<Option<GenStats>>,
    check: RwSignal<Option<CheckReport>>,
    error: RwSignal<Option<Failure>>,
    prompt: RwSignal<Option<String>>,
    notice: RwSignal<String>,
}

fn query_model_url() -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search).ok()?;
    params.get("model").filter(|s| !s.is_empty())
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

impl State {
    fn new() -> State {
        State {
            model_url: RwSignal::new(query_model_url().unwrap_or_else(|| DEFAULT_MODEL_URL.to_string())),
            model: RwSignal::new(ModelState::Empty),
            schema: RwSignal::new(EXAMPLES[0].schema.to_string()),
            question: RwSignal::new(EXAMPLES[0].question.to_string()),
            max_tokens: RwSignal::new(GenOptions::default().max_new_tokens),
            temperature: RwSignal::new(0.0),
            constrain: RwSignal::new(GenOptions::default().constrain),
            generating: RwSignal::new(false),
            output: RwSignal::new(String::new()),
            stats: RwSignal::new(None),
            check: RwSignal::new(None),
            error: RwSignal::new(None),
            prompt: RwSignal::new(None),
            notice: RwSignal::new(String::new()),
        }
    }

    fn loaded(&self) -> bool {
        matches!(self.model.get(), ModelState::Ready { .. })
    }

    fn on_message(&self, msg: FromWorker) {
        match msg {
            FromWorker::Ready | FromWorker::BenchDone { .. } => {}
            FromWorker::Progress { loaded, total } => self.model.set(ModelState::Loading { loaded, total }),
            FromWorker::Loaded {
                bytes,
                from_cache,
                load_ms,
                download_ms,
                model,
                ..
            } => {
                self.model.set(ModelState::Ready {
                    model,
                    bytes,
                    from_cache,
                    load_ms: load_ms + download_ms,
                });
                self.error.set(None);
            }
            FromWorker::Prompt { text } => self.prompt.set(Some(text)),
            FromWorker::Token { text } => self.output.update(|o| o.push_str(&text)),
            FromWorker::Done { stats } => {
                self.check
                    .set(Some(check::check(&self.schema.get_untracked(), &stats.sql)));
                self.stats.set(Some(stats));
                self.generating.set(false);
            }
            FromWorker::CacheCleared { removed } => self.notice.set(format!(
                "Cache cleared ({removed} file{}).",
                if removed == 1 { "" } else { "s" }
            )),
            FromWorker::Error { stage, message } => {
                if matches!(stage, Stage::Download | Stage::Load) {
                    self.model.set(ModelState::Failed);
                }
                self.generating.set(false);
                self.error.set(Some(Failure { stage, message }));
            }
        }
    }

    fn load(&self) {
        let url = self.model_url.get_untracked().trim().to_string();
        if url.is_empty() {
            self.error.set(Some(Failure {
                stage: Stage::Download,
                message: "enter a model URL".into(),
            }));
            return;
        }
        self.error.set(None);
        self.notice.set(String::new());
        self.model.set(ModelState::Loading {
            loaded: 0.0,
            total: None,
        });
        send(ToWorker::Load { url });
    }

    fn can_generate(&self) -> bool {
        self.loaded() && !self.generating.get() && check::summarize(&self.schema.get()).is_ok()
    }

    fn generate(&self) {
        if !self.can_generate() {
            return;
        }
        self.output.set(String::new());
        self.stats.set(None);
        self.check.set(None);
        self.error.set(None);
        self.generating.set(true);
        send(ToWorker::Generate {
            schema: self.schema.get_untracked(),
            question: self.question.get_untracked(),
            options: GenOptions {
                max_new_tokens: self.max_tokens.get_untracked(),
                temperature: self.temperature.get_untracked(),
                constrain: self.constrain.get_untracked(),
                ..GenOptions::default()
            },
        });
    }

    /// Stopping terminates the worker; the fresh one reloads the model from the cache.
    fn stop(&self) {
        if !self.generating.get_untracked() {
            return;
        }
        self.generating.set(false);
        self.notice.set("Stopped. Reloading the model from the cache…".into());
        CLIENT.with(|c| {
            if let Some(c) = c.borrow().as_ref() {
                c.restart()
            }
        });
        self.load();
    }
}

pub fn mount() {
    let state = State::new();
    let client = Client::new(&page_base(), move |msg| state.on_message(msg));
    CLIENT.with(|c| *c.borrow_mut() = Some(client));
    let Some(root) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("sqlora-app"))
    else {
        return;
    };
    use wasm_bindgen::JsCast;
    leptos::mount::mount_to(root.unchecked_into(), move || view! { <App state=state/> }).forget();
    if query_model_url().is_some() {
        state.load();
    }
}

#[component]
fn App(state: State) -> impl IntoView {
    // Ctrl+Enter (or Cmd+Enter) generates from anywhere on the page.
    let keys = window_event_listener(ev::keydown, move |e| {
        if e.key() == "Enter" && (e.ctrl_key() || e.meta_key()) {
            e.prevent_default();
            state.generate();
        }
    });
    on_cleanup(move || keys.remove());
    view! {
        <header>
            <h1>"sqlora"</h1>
            <p class="tagline">"Text to SQL, generated on your own machine. Nothing leaves the browser."</p>
        </header>
        <main>
            <ModelPanel state=state/>
            <SchemaPanel state=state/>
            <AskPanel state=state/>
            <OutputPanel state=state/>
        </main>
    }
}

#[component]
fn ModelPanel(state: State) -> impl IntoView {
    let progress_text = move || match state.model.get() {
        ModelState::Empty => "No model loaded.".to_string(),
        ModelState::Loading { loaded, total: Some(t) } if t > 0.0 => {
            format!("Downloading {} / {} ({:.0}%)", mb(loaded), mb(t), 100.0 * loaded / t)
        }
        ModelState::Loading { loaded, .. } => format!("Loading… {}", mb(loaded)),
        ModelState::Ready {
            model,
            bytes,
            from_cache,
            load_ms,
        } => format!(
            "Loaded {model} ({}, {}) in {:.1} s.",
            mb(bytes),
            if from_cache { "from cache" } else { "downloaded" },
            load_ms / 1000.0
        ),
        ModelState::Failed => "Loading failed.".to_string(),
    };
    let fraction = move || match state.model.get() {
        ModelState::Loading { loaded, total: Some(t) } if t > 0.0 => (loaded / t).min(1.0),
        ModelState::Ready { .. } => 1.0,
        _ => 0.0,
    };
    let loading = move || matches!(state.model.get(), ModelState::Loading { .. });
    view! {
        <section class="card">
            <h2>"1. Model"</h2>
            <div class="row">
                <input data-testid="model-url" type="text" aria-label="Model URL" placeholder="URL of a GGUF model"
                    prop:value=move || state.model_url.get()
                    on:input=move |e| state.model_url.set(event_target_value(&e))
                    on:keydown=move |e| { if e.key() == "Enter" { state.load() } }/>
                <button data-testid="load" on:click=move |_| state.load() disabled=loading>
                    {move || if matches!(state.model.get(), ModelState::Failed) { "Retry" } else { "Load" }}
                </button>
                <button class="secondary" data-testid="clear-cache" title="Delete downloaded models from this browser"
                    on:click=move |_| send(ToWorker::ClearCache)>"Clear cache"</button>
            </div>
            <progress data-testid="progress" max="1" prop:value=fraction></progress>
            <p class="status" data-testid="model-status">{progress_text}</p>
            <p class="notice">{move || state.notice.get()}</p>
        </section>
    }
}

#[component]
fn SchemaPanel(state: State) -> impl IntoView {
    let summary = move || check::summarize(&state.schema.get());
    view! {
        <section class="card">
            <h2>"2. Schema"</h2>
            <div class="row">
                <label for="example">"Example:"</label>
                <select id="example" data-testid="example" on:change=move |e| {
                    let name = event_target_value(&e);
                    if let Some(ex) = EXAMPLES.iter().find(|x| x.name == name) {
                        state.schema.set(ex.schema.to_string());
                        state.question.set(ex.question.to_string());
                    }
                }>
                    {EXAMPLES.iter().map(|x| view! { <option value=x.name>{x.name}</option> }).collect_view()}
                </select>
            </div>
            <textarea data-testid="schema" rows="12" spellcheck="false" aria-label="Schema"
                placeholder="CREATE TABLE singer (id int, name text);  or  singer: id, name"
                prop:value=move || state.schema.get()
                on:input=move |e| state.schema.set(event_target_value(&e))></textarea>
            <p data-testid="schema-status" class=move || if summary().is_ok() { "status ok" } else { "status bad" }>
                {move || match summary() {
                    Ok(s) if s.columns > 0 => format!("{} tables, {} columns", s.tables, s.columns),
                    Ok(s) => format!("{} tables", s.tables),
                    Err(e) => e,
                }}
            </p>
        </section>
    }
}

#[component]
fn AskPanel(state: State) -> impl IntoView {
    view! {
        <section class="card">
            <h2>"3. Question"</h2>
            <input data-testid="question" type="text" aria-label="Question" placeholder="How many singers do we have?"
                prop:value=move || state.question.get()
                on:input=move |e| state.question.set(event_target_value(&e))/>
            <div class="row settings">
                <label>"Max tokens "
                    <input data-testid="max-tokens" type="number" min="1" max="1024"
                        prop:value=move || state.max_tokens.get().to_string()
                        on:input=move |e| { if let Ok(v) = event_target_value(&e).parse::<usize>() { state.max_tokens.set(v.clamp(1, 1024)) } }/>
                </label>
                <label>"Temperature "
                    <input data-testid="temperature" type="number" min="0" max="2" step="0.1"
                        prop:value=move || state.temperature.get().to_string()
                        on:input=move |e| { if let Ok(v) = event_target_value(&e).parse::<f64>() { state.temperature.set(v.clamp(0.0, 2.0)) } }/>
                </label>
                <label title="Only let the model write a read-only query over the schema's tables and columns">
                    <input data-testid="constrain" type="checkbox"
                        prop:checked=move || state.constrain.get()
                        on:change=move |e| state.constrain.set(event_target_checked(&e))/>
                    " Constrain to schema"
                </label>
            </div>
            <div class="row">
                <button data-testid="generate" class="primary" title="Ctrl+Enter"
                    disabled=move || !state.can_generate() on:click=move |_| state.generate()>"Generate"</button>
                <button data-testid="stop" disabled=move || !state.generating.get() on:click=move |_| state.stop()>"Stop"</button>
                <span class="hint">"Ctrl+Enter generates"</span>
            </div>
        </section>
    }
}

#[component]
fn OutputPanel(state: State) -> impl IntoView {
    let stats_line = move || {
        state.stats.get().map(|s| {
            format!(
                "{} prompt + {} new tokens · first token {:.0} ms · prompt {:.1} tok/s · decode {:.1} tok/s · stop: {}",
                s.prompt_tokens, s.new_tokens, s.time_to_first_token_ms, s.prompt_tps, s.decode_tps, s.stop
            )
        })
    };
    let sql = move || state.stats.get().map(|s| s.sql).unwrap_or_default();
    let copy = move |_| {
        if let Some(w) = web_sys::window() {
            let _ = w.navigator().clipboard().write_text(&sql());
        }
    };
    view! {
        <section class="card">
            <h2>"4. Result"</h2>
            <div data-testid="error" class="error" role="alert" hidden=move || state.error.get().is_none()>
                {move || state.error.get().map(|f| f.message)}
                {move || state.error.get().filter(|f| matches!(f.stage, Stage::Download | Stage::Load)).map(|_| view! {
                    <button class="secondary" on:click=move |_| state.load()>"Retry"</button>
                })}
            </div>
            <h3>"Streamed output"</h3>
            <pre data-testid="output" class="output" aria-live="polite">{move || state.output.get()}</pre>
            <p class="stats" data-testid="stats">{stats_line}</p>
            <h3>"SQL"</h3>
            <div class="sql-box">
                <pre data-testid="sql" class="sql">
                    {move || highlight::tokens(&sql()).into_iter()
                        .map(|(k, s)| view! { <span class=k.class()>{s.to_string()}</span> })
                        .collect_view()}
                </pre>
                <button class="secondary copy" data-testid="copy" on:click=copy disabled=move || sql().is_empty()>"Copy"</button>
            </div>
            <div data-testid="check" class=move || match state.check.get() {
                Some(c) if c.ok => "check ok",
                Some(_) => "check bad",
                None => "check",
            }>
                {move || state.check.get().map(|c| view! {
                    <strong>{if c.ok { "✓ " } else { "✗ " }}{c.summary}</strong>
                    <ul>{c.issues.into_iter().map(|i| view! { <li>{i}</li> }).collect_view()}</ul>
                })}
            </div>
            <details>
                <summary>"Prompt"</summary>
                <pre class="prompt">{move || state.prompt.get().map(|t| match state.stats.get() {
                    Some(s) => format!("{t}\n[{} tokens]", s.prompt_tokens),
                    None => t,
                })}</pre>
            </details>
        </section>
    }
}
