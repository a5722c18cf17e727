/**
 * Command-line entry: flags → one typed options object → one library call → render.
 * Maps AirlockError codes to documented exit codes; never shows a stack trace for expected errors.
 */
import { Command, CommanderError, Option } from 'commander';
import { AirlockError, ExitCode } from '../errors.js';
import { toolVersion } from '../version.js';
import { processOutput, renderError, type Output } from './render.js';
import { registerExport } from './export.js';
import { registerImport, registerInspect, registerVerify } from './import.js';
import { registerKeys } from './keys.js';
import { registerResign } from './resign.js';
import { registerCache } from './cache.js';

export interface CommandContext {
  output(json: boolean): Output;
}

export function buildProgram(context: CommandContext): Command {
  const program = new Command('airlock')
    .description('Carry machine-learning models across an air gap: signed, verified, atomic.')
    .version(toolVersion, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ sortSubcommands: false });
  registerKeys(program, context);
  registerExport(program, context);
  registerVerify(program, context);
  registerImport(program, context);
  registerInspect(program, context);
  registerResign(program, context);
  registerCache(program, context);
  return program;
}

/** Adds the `--json` flag shared by the commands that produce a result. */
export function jsonOption(): Option {
  return new Option('--json', 'print one machine-readable JSON result on stdout');
}

export async function main(argv: readonly string[]): Promise<number> {
  let json = argv.includes('--json');
  const context: CommandContext = {
    output: (flag) => {
      json = flag;
      return processOutput(flag);
    },
  };
  const program = buildProgram(context);
  program.exitOverride();
  try {
    await program.parseAsync([...argv]);
    return ExitCode.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // help and version are successes; everything else commander rejects is a usage error
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') return ExitCode.ok;
      return ExitCode.usage;
    }
    const out = processOutput(json);
    if (error instanceof AirlockError) {
      renderError(out, error);
      return error.exitCode;
    }
    const internal = new AirlockError('E_INTERNAL', `unexpected failure: ${(error as Error)?.stack ?? String(error)}`, {
      hint: 'this is a bug in airlock; please report it with the command you ran',
    });
    renderError(out, internal);
    return internal.exitCode;
  }
}
