/**
 * The JSON Schema validators of our own file formats (schemas/*.schema.json; ajv, draft 2020-12,
 * allErrors, strict).
 *
 * `npm run build` compiles each schema ahead of time into `dist/validators/<name>.cjs` (ajv's standalone
 * code: the same validation function ajv builds at run time, as source). Loading it takes ~2 ms, where
 * loading ajv and compiling the schema took ~120 ms at the start of every command that reads a manifest
 * (verify, import, inspect, publish, pull, serve...). A precompiled validator is used only when it was made
 * from the schema file as it is now — its SHA-256 is recorded in it and checked here — so an edited schema
 * is never checked by a stale validator; otherwise (running from `src/` under tsx, a schema edited after
 * the build) the schema is compiled here, as before.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { ErrorObject } from 'ajv';
import type { Ajv2020 as Ajv2020Class } from 'ajv/dist/2020.js';

export type SchemaName = 'manifest' | 'inventory' | 'bundle-spec';

export interface SchemaValidator {
  (value: unknown): boolean;
  errors?: ErrorObject[] | null;
}

const require = createRequire(import.meta.url);
const cache = new Map<SchemaName, { validate: SchemaValidator; precompiled: boolean }>();

function schemaUrl(name: SchemaName): URL {
  return new URL(`../../schemas/${name}.schema.json`, import.meta.url);
}

function precompiled(name: SchemaName, sha256: string): SchemaValidator | undefined {
  let loaded: (SchemaValidator & { schemaSha256?: string }) | undefined;
  try {
    loaded = require(new URL(`../validators/${name}.cjs`, import.meta.url).pathname) as SchemaValidator & { schemaSha256?: string };
  } catch {
    return undefined; // not built (running from src/)
  }
  return loaded.schemaSha256 === sha256 ? loaded : undefined;
}

function entry(name: SchemaName): { validate: SchemaValidator; precompiled: boolean } {
  let found = cache.get(name);
  if (found === undefined) {
    const text = readFileSync(schemaUrl(name), 'utf8');
    const ready = precompiled(name, createHash('sha256').update(text).digest('hex'));
    if (ready !== undefined) found = { validate: ready, precompiled: true };
    else {
      // ajv is loaded only on this path: a built CLI never pays for it
      const { Ajv2020 } = require('ajv/dist/2020.js') as { Ajv2020: typeof Ajv2020Class };
      found = { validate: new Ajv2020({ allErrors: true, strict: true }).compile(JSON.parse(text) as object), precompiled: false };
    }
    cache.set(name, found);
  }
  return found;
}

/** The validator of schemas/<name>.schema.json; after a failed call its `errors` list every problem. */
export function schemaValidator(name: SchemaName): SchemaValidator {
  return entry(name).validate;
}

/** Every way `value` breaks schemas/<name>.schema.json, as `<JSON pointer> <message>` lines (none: valid). */
export function schemaProblems(name: SchemaName, value: unknown): string[] {
  const validate = schemaValidator(name);
  if (validate(value)) return [];
  return (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`);
}

/** Whether `schemaValidator(name)` is the build's precompiled one (for tests and diagnostics). */
export function isPrecompiled(name: SchemaName): boolean {
  return entry(name).precompiled;
}
