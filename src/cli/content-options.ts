/** `--allow-unsafe-pickle`, `--allow-global`, `--content-policy` for verify and import; and how verdicts are shown. */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { fsError } from '../errors.js';
import { checkGlobalNames, parsePolicyFile, type ContentPolicy } from '../content/index.js';
import type { ContentOutcome } from '../import/index.js';
import type { Output } from './render.js';

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export interface ContentFlags {
  allowUnsafePickle?: boolean;
  allowGlobal: string[];
  contentPolicy?: string;
}

export function addContentOptions(command: Command): Command {
  return command
    .option('--allow-unsafe-pickle', 'let files through whose loading would import globals outside the allow-list, or that cannot be analysed (recorded in the result and --report)')
    .option('--allow-global <module.name>', 'add one global to the pickle allow-list, exactly as the pickle names it (repeatable)', collect, [])
    .option('--content-policy <file>', 'a file of globals to allow, one module.name per line (# comments)');
}

export async function contentPolicyFrom(flags: ContentFlags): Promise<ContentPolicy> {
  const globals = checkGlobalNames(flags.allowGlobal, '--allow-global');
  if (flags.contentPolicy !== undefined) {
    const path = resolve(flags.contentPolicy);
    const text = await readFile(path, 'utf8').catch((error: unknown) => {
      throw fsError(error, 'read', path);
    });
    globals.push(...parsePolicyFile(text, path));
  }
  return { allowGlobals: [...new Set(globals)].sort(), allowUnsafe: Boolean(flags.allowUnsafePickle) };
}

/** One line per file that holds pickles or needs attention; a count for the rest. */
export function renderContent(out: Output, content: ContentOutcome | undefined): void {
  if (content === undefined) return;
  const noCode = content.files.filter((f) => f.verdict === 'no-code' && f.notes.length === 0).length;
  for (const f of content.files) {
    if (f.verdict === 'no-code' && f.notes.length === 0) continue;
    const what =
      f.verdict === 'unsafe'
        ? `UNSAFE: would import ${f.unsafeGlobals.join(', ')}`
        : f.verdict === 'unscannable'
          ? `UNSCANNABLE: ${f.problems.slice(0, 2).join('; ')}`
          : f.verdict === 'safe'
            ? `safe: ${f.globals.length} allow-listed global(s)`
            : 'no code';
    out.stdout(`  content ${f.repo} ${f.path} (${f.format}): ${what}${f.verdict !== 'safe' && f.verdict !== 'no-code' && content.allowUnsafe ? ' — let through by --allow-unsafe-pickle' : ''}\n`);
    for (const n of f.notes) out.stdout(`    note: ${n}\n`);
  }
  out.stdout(`  content: ${noCode} file(s) carry no code${content.allowGlobals.length > 0 ? `; allow-list widened by ${content.allowGlobals.join(', ')}` : ''}\n`);
}
