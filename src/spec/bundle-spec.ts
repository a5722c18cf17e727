/**
 * `airlock.yaml`, the bundle spec (docs/bundle-spec.md): many repos — each with source, type, revision,
 * include/exclude — plus bundle-level options (output, signing key, split size). Pure: text in, spec or
 * EVERY problem out, each with line:column, from YAML syntax errors, the JSON Schema
 * (schemas/bundle-spec.schema.json, ajv with allErrors) and the rules a schema cannot say (safe ids and
 * revisions, duplicates).
 */
import { dirname, resolve } from 'node:path';
import type { ErrorObject } from 'ajv';
import { schemaValidator } from '../schema/validators.js';
import { isMap, isScalar, LineCounter, parseDocument, type Node as YamlNode, type Document } from 'yaml';
import type { RepoType } from '../bundle/manifest.js';
import { AirlockError } from '../errors.js';
import { unsafeRepoIdReason, unsafeRevisionReason } from '../fs/safe-path.js';

export type SpecSource = 'huggingface' | 'modelscope' | 'hf-cache';

export interface BundleSpecRepo {
  source: SpecSource;
  type: RepoType;
  id: string;
  /** As written, else the source's default (main; master for modelscope). */
  revision: string;
  include: string[];
  exclude: string[];
  endpoint?: string;
  /** 1-based line of the entry in the spec file (for messages). */
  line: number;
}

export interface BundleSpec {
  output?: string;
  signingKey?: string;
  /** Bytes. */
  splitSize?: number;
  repos: BundleSpecRepo[];
}

export interface SpecProblem {
  /** 1-based. */
  line: number;
  /** 1-based. */
  column: number;
  /** JSON pointer of the value concerned ('' for the document). */
  path: string;
  message: string;
}

export const DEFAULT_REVISIONS: Readonly<Record<SpecSource, string>> = { huggingface: 'main', modelscope: 'master', 'hf-cache': 'main' };

function validate(value: unknown): ErrorObject[] {
  const validator = schemaValidator('bundle-spec');
  return validator(value) ? [] : [...(validator.errors ?? [])];
}

const UNITS: Readonly<Record<string, number>> = {
  B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30, TIB: 2 ** 40,
};

/** `2GiB`, `500 MB`, `1048576` → bytes; undefined when not a size. */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?$/i.exec(value.trim());
  if (m === null) return undefined;
  const bytes = Math.floor(Number(m[1]) * (UNITS[(m[2] ?? 'B').toUpperCase()] ?? NaN));
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}

function splitPatterns(value: unknown): string[] {
  const list = typeof value === 'string' ? [value] : Array.isArray(value) ? (value as string[]) : [];
  return list.flatMap((p) => p.split(',')).map((p) => p.trim()).filter((p) => p !== '');
}

/** Decodes a JSON pointer into path segments (numbers for array indexes where they look like one). */
function pointerSegments(pointer: string): Array<string | number> {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function encodePointer(segments: ReadonlyArray<string | number>): string {
  return segments.map((s) => `/${String(s).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

/** The node's start offset for a pointer; for a missing key, the nearest existing parent; optionally a key's own position. */
function offsetOf(doc: Document, segments: ReadonlyArray<string | number>, key?: string): number {
  const parent = doc.getIn(segments, true) as YamlNode | undefined;
  if (key !== undefined && parent !== undefined && isMap(parent)) {
    const pair = parent.items.find((p) => isScalar(p.key) && String(p.key.value) === key);
    const keyNode = pair?.key as YamlNode | undefined;
    if (keyNode?.range != null) return keyNode.range[0];
  }
  if (parent?.range != null) return parent.range[0];
  if (segments.length > 0) return offsetOf(doc, segments.slice(0, -1));
  return (doc.contents)?.range?.[0] ?? 0;
}

function describe(error: ErrorObject): { message: string; key?: string } {
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'additionalProperties':
      return { message: `unknown key ${JSON.stringify(params['additionalProperty'])}`, key: String(params['additionalProperty']) };
    case 'required':
      return { message: `missing required key ${JSON.stringify(params['missingProperty'])}` };
    case 'enum':
      return { message: `must be one of ${(params['allowedValues'] as unknown[]).map((v) => JSON.stringify(v)).join(', ')}` };
    case 'const':
      return { message: `must be ${JSON.stringify(params['allowedValue'])}` };
    case 'pattern':
      return { message: `${error.message ?? 'does not match'}` };
    default:
      return { message: error.message ?? 'is invalid' };
  }
}

/** Parses and validates; never throws for a bad spec, returns every problem (sorted by position). */
export function checkBundleSpec(text: string): { spec?: BundleSpec; problems: SpecProblem[] } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  const at = (offset: number): { line: number; column: number } => {
    const pos = lineCounter.linePos(offset);
    return { line: pos.line, column: pos.col };
  };
  const problems: SpecProblem[] = [];
  for (const error of doc.errors) {
    const pos = error.linePos?.[0];
    const { line, column } = pos !== undefined ? { line: pos.line, column: pos.col } : at(error.pos[0]);
    problems.push({ line, column, path: '', message: error.message.split('\n')[0] ?? error.code });
  }
  if (problems.length > 0) return { problems };

  const value: unknown = doc.toJS({ maxAliasCount: 100 });
  if (value === null || value === undefined) return { problems: [{ line: 1, column: 1, path: '', message: 'the spec is empty: it needs a "repos" list' }] };

  // ajv reports a failed oneOf both per branch and as a whole: keep the branches' messages once, at the value
  const seen = new Set<string>();
  for (const error of validate(value)) {
    const segments = pointerSegments(error.instancePath);
    const { message, key } = error.keyword === 'oneOf' ? { message: oneOfMessage(segments) } : describe(error);
    if (isInsideOneOf(error, value)) continue;
    const pos = at(offsetOf(doc, segments, key));
    const path = key !== undefined ? encodePointer([...segments, key]) : error.instancePath;
    const id = `${pos.line}:${pos.column}:${path}:${message}`;
    if (seen.has(id)) continue;
    seen.add(id);
    problems.push({ ...pos, path, message });
  }

  // what the schema cannot say
  const obj = value as { repos?: unknown; splitSize?: unknown };
  if (typeof obj.splitSize === 'string' && problems.every((p) => p.path !== '/splitSize')) {
    const size = parseSize(obj.splitSize);
    if (size === undefined || size < 2 ** 20) problems.push({ ...at(offsetOf(doc, ['splitSize'])), path: '/splitSize', message: 'must be at least 1 MiB' });
  }
  const repos: BundleSpecRepo[] = [];
  if (Array.isArray(obj.repos)) {
    const keys = new Map<string, number>();
    obj.repos.forEach((raw: unknown, i) => {
      if (raw === null || typeof raw !== 'object') return;
      const r = raw as Record<string, unknown>;
      const source = (r['source'] as SpecSource | undefined) ?? 'huggingface';
      const type = (r['type'] as RepoType | undefined) ?? 'model';
      const id = typeof r['id'] === 'string' ? r['id'] : '';
      const revision = typeof r['revision'] === 'string' ? r['revision'] : (DEFAULT_REVISIONS[source] ?? 'main');
      const line = at(offsetOf(doc, ['repos', i])).line;
      const idReason = id === '' ? undefined : unsafeRepoIdReason(id);
      if (idReason !== undefined && problems.every((p) => p.path !== `/repos/${i}/id`)) {
        problems.push({ ...at(offsetOf(doc, ['repos', i, 'id'])), path: `/repos/${i}/id`, message: idReason });
      }
      if (source === 'modelscope' && id !== '' && !id.includes('/')) {
        problems.push({ ...at(offsetOf(doc, ['repos', i, 'id'])), path: `/repos/${i}/id`, message: 'a ModelScope id is owner/name' });
      }
      const revReason = typeof r['revision'] === 'string' ? unsafeRevisionReason(revision) : undefined;
      if (revReason !== undefined) problems.push({ ...at(offsetOf(doc, ['repos', i, 'revision'])), path: `/repos/${i}/revision`, message: revReason });
      const key = `${source} ${type} ${id}@${revision}`;
      const first = keys.get(key);
      if (first !== undefined && id !== '') {
        problems.push({ ...at(offsetOf(doc, ['repos', i])), path: `/repos/${i}`, message: `${type} ${id}@${revision} from ${source} is already listed at line ${first}` });
      } else keys.set(key, line);
      const repo: BundleSpecRepo = { source, type, id, revision, include: splitPatterns(r['include']), exclude: splitPatterns(r['exclude']), line };
      if (typeof r['endpoint'] === 'string') repo.endpoint = r['endpoint'].replace(/\/+$/, '');
      repos.push(repo);
    });
  }

  problems.sort((a, b) => a.line - b.line || a.column - b.column);
  if (problems.length > 0) return { problems };
  const v = value as { output?: string; signingKey?: string; splitSize?: string | number };
  const spec: BundleSpec = { repos };
  if (v.output !== undefined) spec.output = v.output;
  if (v.signingKey !== undefined) spec.signingKey = v.signingKey;
  if (v.splitSize !== undefined) spec.splitSize = parseSize(v.splitSize);
  return { spec, problems };

  function oneOfMessage(segments: ReadonlyArray<string | number>): string {
    const last = segments[segments.length - 1];
    if (last === 'splitSize') return 'must be a byte count (at least 1048576) or a size like "2GiB"';
    if (last === 'include' || last === 'exclude') return 'must be a pattern or a list of patterns';
    return 'has the wrong type';
  }
}

/** ajv's per-branch errors of a oneOf (the oneOf error itself says it once). */
function isInsideOneOf(error: ErrorObject, _value: unknown): boolean {
  return error.keyword !== 'oneOf' && /\/oneOf\/\d+\//.test(error.schemaPath);
}

/** Parses `airlock.yaml`; throws one E_USAGE listing every problem as `file:line:column: message`. */
export function parseBundleSpec(text: string, subject = 'airlock.yaml'): BundleSpec {
  const { spec, problems } = checkBundleSpec(text);
  if (spec !== undefined) return spec;
  const lines = problems.map((p) => `${subject}:${p.line}:${p.column}: ${p.path !== '' ? `${p.path}: ` : ''}${p.message}`);
  throw new AirlockError('E_USAGE', `${subject} is not a valid bundle spec (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  ${lines.join('\n  ')}`, {
    subject,
    hint: 'see docs/bundle-spec.md for the format and an example',
  });
}

/** `output` and `signingKey` resolved against the spec file's directory. */
export function resolveSpecPaths(spec: BundleSpec, specPath: string): BundleSpec {
  const base = dirname(resolve(specPath));
  return {
    ...spec,
    // a trailing slash keeps meaning "a folder": the bundle is written inside it under its default name
    ...(spec.output !== undefined ? { output: `${resolve(base, spec.output)}${/[\\/]$/.test(spec.output) ? '/' : ''}` } : {}),
    ...(spec.signingKey !== undefined ? { signingKey: resolve(base, spec.signingKey) } : {}),
  };
}
