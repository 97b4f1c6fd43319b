// Builds the dashboard into ../src/dashboard/assets/: index.html, app.js and
// app.css (uPlot and our code bundled by esbuild; nothing loaded from another
// host). The head embeds these three files at C++ build time, so the C++ build
// never needs Node.js; rerun `npm run build` after changing src/ and commit
// the result. `npm run check` fails when the committed files are stale.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, '..', 'src', 'dashboard', 'assets');
const check = process.argv.includes('--check');

const result = await build({
  entryPoints: { app: join(here, 'src', 'main.js') },
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2020',
  legalComments: 'eof',
  charset: 'utf8',
  outdir: join(here, 'out'),
  write: false,
  logLevel: 'warning',
});

const files = {};
for (const f of result.outputFiles) {
  const name = f.path.endsWith('.css') ? 'app.css' : f.path.endsWith('.js') ? 'app.js' : null;
  if (name) files[name] = Buffer.from(f.contents);
}
if (!files['app.js'] || !files['app.css']) throw new Error('esbuild did not produce app.js and app.css');

// index.html refers to the bundle with a content hash, so browsers may cache
// the static files for long and still pick up a new build at once.
const version = (buf) => createHash('sha256').update(buf).digest('hex').slice(0, 12);
const html = readFileSync(join(here, 'src', 'index.html'), 'utf8')
  .replace('__APP_JS__', `static/app.js?v=${version(files['app.js'])}`)
  .replace('__APP_CSS__', `static/app.css?v=${version(files['app.css'])}`);
files['index.html'] = Buffer.from(html);

if (check) {
  const stale = Object.entries(files).filter(([name, buf]) => {
    const p = join(outDir, name);
    return !existsSync(p) || !readFileSync(p).equals(buf);
  });
  if (stale.length) {
    console.error(`stale: ${stale.map(([n]) => n).join(', ')} in ${outDir}; run npm run build in dashboard/`);
    process.exit(1);
  }
  console.log('src/dashboard/assets is up to date');
} else {
  mkdirSync(outDir, { recursive: true });
  for (const [name, buf] of Object.entries(files)) writeFileSync(join(outDir, name), buf);
  for (const [name, buf] of Object.entries(files)) console.log(`${name.padEnd(10)} ${(buf.length / 1024).toFixed(1)} KiB`);
}
