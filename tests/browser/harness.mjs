// Shared by the e2e tests and the benchmark: a static server for trunk's
// dist/ (plus the model folder), and headless Chromium through playwright-core.
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '..', '..');
export const DIST = process.env.SQLORA_WEB_DIST || path.join(REPO, 'dist');
export const MODELS = path.join(REPO, 'web-demo', 'models');
export const ARTIFACTS = path.join(HERE, 'artifacts');
export const DEFAULT_MODEL_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json', '.md': 'text/plain',
  '.png': 'image/png', '.gguf': 'application/octet-stream',
};

/**
 * The default base model, by the rule of core/src/default_model.rs (SQLORA_MODEL,
 * else SQLORA_CACHE, else XDG_CACHE_HOME/sqlora, else ~/.cache/sqlora).
 */
export function defaultModelPath() {
  if (process.env.SQLORA_MODEL) return process.env.SQLORA_MODEL;
  const cache = process.env.SQLORA_CACHE ||
    path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'sqlora');
  return path.join(cache, DEFAULT_MODEL_FILE);
}

/**
 * Serve `root` on 127.0.0.1 at a free port; `mounts` maps URL prefixes to
 * folders (e.g. {'/models/': MODELS}). Returns {url, close}.
 */
export async function serve(root = DIST, mounts = {}) {
  if (!fs.existsSync(path.join(root, 'index.html'))) {
    throw new Error(`${root}/index.html is missing: build the demo first (trunk build)`);
  }
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let file = null;
    for (const [prefix, dir] of Object.entries(mounts)) {
      if (url.pathname.startsWith(prefix)) file = path.join(dir, decodeURIComponent(url.pathname.slice(prefix.length)));
    }
    if (!file) file = path.join(root, decodeURIComponent(url.pathname));
    if (url.pathname.endsWith('/')) file = path.join(file, 'index.html');
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        return res.end(`not found: ${url.pathname}`);
      }
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file)] || 'application/octet-stream',
        'content-length': st.size,
        'cache-control': 'no-store',
      });
      fs.createReadStream(file).pipe(res);
    });
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((ok) => { server.closeAllConnections?.(); server.close(ok); }),
  };
}

/** Headless Debian chromium with a fresh profile (so no cached model leaks between runs). */
export async function launch() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sqlora-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    viewport: { width: 1100, height: 1400 },
  });
  const page = context.pages()[0] || await context.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));
  return {
    context, page, logs,
    close: async () => { await context.close(); fs.rmSync(userDataDir, { recursive: true, force: true }); },
  };
}

/** Put the model where the server's /models/ finds it (a symlink; the folder is git-ignored). */
export function ensureServedModel(file = DEFAULT_MODEL_FILE, source = defaultModelPath()) {
  const target = path.join(MODELS, file);
  if (fs.existsSync(target)) return target;
  if (!fs.existsSync(source)) throw new Error(`model not found at ${source}: run the fetch-model step (or set SQLORA_MODEL)`);
  fs.mkdirSync(MODELS, { recursive: true });
  fs.symlinkSync(path.resolve(source), target);
  return target;
}
