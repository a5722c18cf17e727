// Part of `npm run build`, after tsc: compiles each schema of our file formats into dist/validators/<name>.cjs
// (ajv standalone code), with the SHA-256 of the schema it was made from. src/schema/validators.ts uses such a
// file only when that hash matches the schema as it is at run time. See there for why.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { createRequire } from 'node:module';
import type standaloneModule from 'ajv/dist/standalone/index.js';

// loaded as CommonJS, as ajv is: the same function under node and tsx
const standaloneCode = (createRequire(import.meta.url)('ajv/dist/standalone/index.js') as typeof standaloneModule).default;
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'validators');
mkdirSync(out, { recursive: true });
for (const name of ['manifest', 'inventory', 'bundle-spec']) {
  const text = readFileSync(join(root, 'schemas', `${name}.schema.json`), 'utf8');
  // the same options as the run-time compile in src/schema/validators.ts, plus code generation
  const ajv = new Ajv2020({ allErrors: true, strict: true, code: { source: true } });
  const validate = ajv.compile(JSON.parse(text) as object);
  const sha256 = createHash('sha256').update(text).digest('hex');
  writeFileSync(join(out, `${name}.cjs`), `${standaloneCode(ajv, validate)}\nmodule.exports.schemaSha256 = ${JSON.stringify(sha256)};\n`);
}
