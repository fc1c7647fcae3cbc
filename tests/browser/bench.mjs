// Browser benchmark of the demo (for BENCHMARKS.md): wasm bundle size, model
// load time (download and from cache), time to first token, prompt and decode
// tokens/s in headless Chromium, through the embedding API. Two measures:
//  - `generate`: the demo's path (prompt for the concert_singer schema, tokens
//    streamed to the page, stops at end-of-turn);
//  - `bench`: the loop of `sqlora bench decode` (same prompt, --new-tokens
//    greedy tokens with EOS ignored, median of --runs after a warm-up), for the
//    browser/native ratio on the same file.
//
//   node bench.mjs [path/to/model.gguf] [--runs N] [--max-new-tokens N] [--new-tokens N]
//
// Needs a trunk build in dist/ (`trunk build --release` for representative
// numbers). Prints one JSON object and a Markdown table row.
import fs from 'node:fs';
import path from 'node:path';
import { serve, launch, DIST, defaultModelPath } from './harness.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : dflt;
};
const runs = Number(opt('--runs', '3'));
const maxNewTokens = Number(opt('--max-new-tokens', '64'));
const newTokens = Number(opt('--new-tokens', '128'));
// Exactly train-native/src/bench.rs's BENCH_PROMPT (202 tokens with SmolLM2's tokenizer).
const BENCH_PROMPT = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nDatabase schema:\nCREATE TABLE stadium (stadium_id INTEGER PRIMARY KEY, location TEXT, name TEXT, capacity INTEGER, average INTEGER);\nCREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, song_name TEXT, age INTEGER, is_male BOOLEAN);\nCREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, theme TEXT, stadium_id INTEGER, year TEXT);\nCREATE TABLE singer_in_concert (concert_id INTEGER, singer_id INTEGER);\n\nQuestion: What are the names and countries of the singers who performed in a concert in 2014 at a stadium with a capacity above 5000?\nAnswer with a single SQLite query only.<|im_end|>\n<|im_start|>assistant\n";
const model = path.resolve(args[0] || defaultModelPath());
if (!fs.existsSync(model)) throw new Error(`no model at ${model}`);

const size = (f) => fs.statSync(path.join(DIST, f)).size;
const bundle = { pageWasm: size('sqlora-web_bg.wasm'), workerWasm: size('sqlora-worker_bg.wasm'),
  js: size('sqlora-web.js') + size('sqlora-worker.js') };

const SCHEMA = `CREATE TABLE stadium (Stadium_ID int PRIMARY KEY, Location text, Name text, Capacity int, Highest int, Lowest int, Average int);
CREATE TABLE singer (Singer_ID int PRIMARY KEY, Name text, Country text, Song_Name text, Song_release_year text, Age int, Is_male bool);
CREATE TABLE concert (concert_ID int PRIMARY KEY, concert_Name text, Theme text, Stadium_ID text REFERENCES stadium(Stadium_ID), Year text);
CREATE TABLE singer_in_concert (concert_ID int REFERENCES concert(concert_ID), Singer_ID text REFERENCES singer(Singer_ID), PRIMARY KEY (concert_ID, Singer_ID));`;

const server = await serve(DIST, { '/bench-model/': path.dirname(model) });
const browser = await launch();
try {
  const { page } = browser;
  // A page without #sqlora-app: only the API, no UI.
  await page.goto(`${server.url}/sqlora-web.js`);
  const result = await page.evaluate(async ({ url, schema, runs, maxNewTokens, benchPrompt, newTokens }) => {
    const api = await import('/sqlora-web.js');
    await api.default();
    const t0 = performance.now();
    const cold = await api.init(url);
    const coldWall = performance.now() - t0;
    const t1 = performance.now();
    const warm = await api.init(url); // from the Cache API this time
    const warmWall = performance.now() - t1;
    const gens = [];
    for (let i = 0; i < runs; i++) {
      gens.push(await api.generate(schema, 'How many singers do we have?', { maxNewTokens }));
    }
    const loop = await api.bench(benchPrompt, newTokens, runs);
    return { cold, coldWall, warm, warmWall, gens, loop };
  }, { url: `${server.url}/bench-model/${encodeURIComponent(path.basename(model))}`, schema: SCHEMA, runs, maxNewTokens,
    benchPrompt: BENCH_PROMPT, newTokens });

  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  // The first run warms up the wasm; report the median of the others.
  const gens = result.gens.length > 1 ? result.gens.slice(1) : result.gens;
  const out = {
    model: path.basename(model),
    modelBytes: fs.statSync(model).size,
    bundle,
    loadColdMs: Math.round(result.coldWall),
    loadFromCacheMs: Math.round(result.warmWall),
    parseMs: Math.round(result.warm.loadMs),
    promptTokens: gens[0].promptTokens,
    newTokens: median(gens.map((g) => g.newTokens)),
    timeToFirstTokenMs: Math.round(median(gens.map((g) => g.timeToFirstTokenMs))),
    promptTps: +median(gens.map((g) => g.promptTps)).toFixed(1),
    decodeTps: +median(gens.map((g) => g.decodeTps)).toFixed(1),
    sql: gens[0].sql,
    benchLoop: { promptTokens: result.loop.promptTokens, newTokens: result.loop.newTokens, runs: result.loop.runs,
      promptTps: +result.loop.promptTps.toFixed(1), decodeTps: +result.loop.decodeTps.toFixed(1) },
  };
  console.log(JSON.stringify(out, null, 2));
  const mb = (b) => (b / 1e6).toFixed(1);
  console.log(`| ${out.model} | ${mb(bundle.workerWasm)} + ${mb(bundle.pageWasm)} MB | ${out.loadColdMs} ms (cached ${out.loadFromCacheMs} ms) | ${out.timeToFirstTokenMs} ms | ${out.promptTps} | ${out.decodeTps} | ${out.benchLoop.promptTps} | ${out.benchLoop.decodeTps} |`);
} finally {
  await browser.close();
  await server.close();
}
