/**
 * Command-line entry: flags → one typed options object → one library call → render.
 * Maps AirlockError codes to documented exit codes; never shows a stack trace for expected errors.
 */
import { Command, CommanderError, Option } from 'commander';
import { AirlockError, ExitCode } from '../errors.js';
import { toolVersion } from '../version.js';
import { processOutput, renderError, type Output } from './render.js';

export interface CommandContext {
  output(json: boolean): Output;
}

type Register = (program: Command, context: CommandContext) => void;

/**
 * Every command, in help order, with the module that defines it. Only the module of the command being
 * run is loaded: `verify` and `import` never load the HTTP client, `export` never loads the staging
 * code — start-up time and memory every run saves (docs/performance.md).
 */
const COMMANDS: ReadonlyArray<{ name: string; load: () => Promise<Register> }> = [
  { name: 'keys', load: async () => (await import('./keys.js')).registerKeys },
  { name: 'export', load: async () => (await import('./export.js')).registerExport },
  { name: 'verify', load: async () => (await import('./import.js')).registerVerify },
  { name: 'import', load: async () => (await import('./import.js')).registerImport },
  { name: 'inspect', load: async () => (await import('./import.js')).registerInspect },
  { name: 'resign', load: async () => (await import('./resign.js')).registerResign },
  { name: 'cache', load: async () => (await import('./cache.js')).registerCache },
  { name: 'serve', load: async () => (await import('./serve.js')).registerServe },
];

/**
 * The program with the command `argv` names — or with every command when it names none (top-level
 * help, a typo that deserves a suggestion). The program has no options of its own but -V and -h, so
 * the command is always right after node and the script.
 */
export async function buildProgram(context: CommandContext, argv: readonly string[] = []): Promise<Command> {
  const program = new Command('airlock')
    .description('Carry machine-learning models across an air gap: signed, verified, atomic.')
    .version(toolVersion, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ sortSubcommands: false });
  const named = COMMANDS.find((c) => c.name === argv[2]);
  for (const command of named === undefined ? COMMANDS : [named]) (await command.load())(program, context);
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
  const program = await buildProgram(context, argv);
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
