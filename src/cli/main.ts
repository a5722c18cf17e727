/**
 * Command-line entry: flags → one typed options object → one library call → render.
 * Maps AirlockError codes to documented exit codes; never shows a stack trace for expected errors.
 */
import { Command, CommanderError, Option } from 'commander';
import { AirlockError, ExitCode } from '../errors.js';
import { toolVersion } from '../version.js';
import { guardStandardStreams, processOutput, renderError, setCommand, type Output } from './render.js';

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
  { name: 'publish', load: async () => (await import('./publish.js')).registerPublish },
  { name: 'pull', load: async () => (await import('./pull.js')).registerPull },
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
    .configureHelp({ sortSubcommands: false })
    // set before the commands are added, so that every command and subcommand inherits them: commander
    // must neither print its own error line nor exit — main() renders usage errors like every other error
    .exitOverride()
    .configureOutput({ outputError: () => undefined });
  const named = COMMANDS.find((c) => c.name === argv[2]);
  for (const command of named === undefined ? COMMANDS : [named]) (await command.load())(program, context);
  return program;
}

/** Adds the `--json` flag shared by the commands that produce a result. */
export function jsonOption(): Option {
  return new Option('--json', 'print one machine-readable JSON result on stdout');
}

/** `airlock verify`, `airlock keys generate`: the command line's command words, for the usage hint. */
function commandPath(program: Command, argv: readonly string[]): string {
  const words = ['airlock'];
  let command: Command | undefined = program;
  for (const arg of argv.slice(2)) {
    const sub: Command | undefined = command?.commands.find((c) => c.name() === arg);
    if (sub === undefined) break;
    words.push(arg);
    command = sub;
  }
  return words.join(' ');
}

/**
 * A command line commander refused (unknown option, missing argument or required flag, unknown command),
 * as the one error type: exit 2, the hint, and the JSON error object under --json.
 */
function usageError(error: CommanderError, program: Command, argv: readonly string[]): AirlockError {
  const path = commandPath(program, argv);
  if (error.code === 'commander.help') {
    // `airlock` or `airlock keys` alone: the help was printed (stderr); no command ran
    let command: Command = program;
    for (const word of path.split(' ').slice(1)) command = command.commands.find((c) => c.name() === word) ?? command;
    const names = command.commands.map((c) => c.name()).filter((n) => n !== 'help');
    return new AirlockError('E_USAGE', `${path} needs a command: ${names.join(', ')}`, { hint: `the help above lists them; \`${path} <command> --help\` explains one` });
  }
  const message = error.message.replace(/^error: /, '');
  return new AirlockError('E_USAGE', message, { hint: `run \`${path} --help\` for usage` });
}

export async function main(argv: readonly string[]): Promise<number> {
  guardStandardStreams();
  let json = argv.includes('--json');
  const context: CommandContext = {
    output: (flag) => {
      json = flag;
      return processOutput(flag);
    },
  };
  const program = await buildProgram(context, argv);
  const path = commandPath(program, argv);
  setCommand(path === 'airlock' ? null : path.slice('airlock '.length));
  try {
    await program.parseAsync([...argv]);
    return ExitCode.ok;
  } catch (caught) {
    let error = caught;
    if (error instanceof CommanderError) {
      // asked-for help and the version are successes; everything else commander rejects is a usage error
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return ExitCode.ok;
      if (error.code === 'commander.help' && error.exitCode === 0) return ExitCode.ok; // `airlock help verify`
      error = usageError(error, program, argv);
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
