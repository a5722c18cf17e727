/**
 * The one error type of model-airlock. Every expected failure is an AirlockError with a code from a
 * closed set; the CLI maps the code's class to a documented exit code and prints message + hint
 * (never a stack trace). Library code throws, it never prints or exits.
 */

/** Exit codes, documented in docs/exit-codes.md. */
export const ExitCode = {
  ok: 0,
  internal: 1,
  usage: 2,
  verification: 3,
  source: 4,
  io: 5,
  interrupted: 130,
} as const;
export type ExitCodeName = keyof typeof ExitCode;

/** Every error code and the exit class it belongs to. */
const codeClass = {
  // usage: the call or its inputs (flags, key files, repo ids) are wrong
  E_USAGE: 'usage',
  E_KEY_INVALID: 'usage',
  E_REPO_ID_INVALID: 'usage',
  E_REVISION_INVALID: 'usage',
  E_OUTPUT_EXISTS: 'usage',
  E_NOTHING_TO_EXPORT: 'usage',
  E_GPG: 'usage',

  // verification: the bundle is not what its signer signed, or not signed by a trusted key
  E_UNSIGNED: 'verification',
  E_SIGNATURE_INVALID: 'verification',
  E_SIGNATURE_UNTRUSTED: 'verification',
  E_SIGNATURE_EXPIRED_KEY: 'verification',
  E_SIGNATURE_REVOKED_KEY: 'verification',
  E_SIGNATURE_WRONG_SUBKEY: 'verification',
  E_NOT_ENOUGH_SIGNATURES: 'verification',
  E_CACHE_CORRUPT: 'verification',
  E_BUNDLE_MALFORMED: 'verification',
  E_SUMS_INVALID: 'verification',
  E_MANIFEST_INVALID: 'verification',
  E_HASH_MISMATCH: 'verification',
  E_SIZE_MISMATCH: 'verification',
  E_UNEXPECTED_ENTRY: 'verification',
  E_MISSING_ENTRY: 'verification',
  E_DUPLICATE_ENTRY: 'verification',
  E_UNSAFE_PATH: 'verification',
  E_ENTRY_TYPE: 'verification',
  /** A `*.safetensors` header that does not parse or does not cover the file, or an index naming a missing shard. */
  E_WEIGHTS_INVALID: 'verification',
  /** A file whose loading would import globals outside the allow-list (pickle), or that cannot be fully analysed. */
  E_UNSAFE_CONTENT: 'verification',

  // source: the hub or the network
  E_REPO_NOT_FOUND: 'source',
  E_GATED: 'source',
  E_DISABLED: 'source',
  E_REVISION_NOT_FOUND: 'source',
  E_ENTRY_NOT_FOUND: 'source',
  E_AUTH: 'source',
  E_FORBIDDEN: 'source',
  E_RATE_LIMITED: 'source',
  E_HTTP: 'source',
  E_HUB_PROTOCOL: 'source',
  E_NETWORK: 'source',
  E_DOWNLOAD_INTEGRITY: 'source',

  // io: the local machine (files, permissions, disk)
  E_IO: 'io',
  E_NOT_FOUND: 'io',
  E_NO_SPACE: 'io',
  E_PERMISSION: 'io',
  E_CACHE_CONFLICT: 'io',
  E_DELTA_BASE_MISSING: 'io',
  /** Another export is writing the same output (or using the same work dir) right now. */
  E_OUTPUT_BUSY: 'io',

  E_INTERRUPTED: 'interrupted',
  E_INTERNAL: 'internal',
} as const satisfies Record<string, ExitCodeName>;

export type ErrorCode = keyof typeof codeClass;
export const errorCodes = Object.keys(codeClass) as ErrorCode[];

export interface AirlockErrorOptions {
  /** What to do about it, for a person. */
  hint?: string;
  /** The file, URL or bundle entry the error is about. */
  subject?: string;
  /** Structured facts for `--json` output (e.g. the full report behind a failed check). */
  details?: unknown;
  cause?: unknown;
}

export class AirlockError extends Error {
  override readonly name = 'AirlockError';
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly subject: string | undefined;
  readonly details: unknown;

  constructor(code: ErrorCode, message: string, options: AirlockErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.hint = options.hint;
    this.subject = options.subject;
    this.details = options.details;
  }

  get exitClass(): ExitCodeName {
    return codeClass[this.code];
  }

  get exitCode(): number {
    return ExitCode[this.exitClass];
  }

  toJSON(): { code: ErrorCode; message: string; hint?: string; subject?: string; details?: unknown; exitCode: number } {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint === undefined ? {} : { hint: this.hint }),
      ...(this.subject === undefined ? {} : { subject: this.subject }),
      ...(this.details === undefined ? {} : { details: this.details }),
      exitCode: this.exitCode,
    };
  }
}

export function isAirlockError(error: unknown, code?: ErrorCode): error is AirlockError {
  return error instanceof AirlockError && (code === undefined || error.code === code);
}

/**
 * Turns a Node file-system error into an AirlockError naming the path, with a hint that fits.
 * Anything already an AirlockError passes through unchanged.
 */
export function fsError(error: unknown, action: string, path: string): AirlockError {
  if (error instanceof AirlockError) return error;
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  switch (errno) {
    case 'ENOSPC':
    case 'EDQUOT':
      return new AirlockError('E_NO_SPACE', `no space left on device while trying to ${action} ${path}`, {
        subject: path,
        hint: 'free some space on that file system (or point the command at another one) and run it again',
        cause: error,
      });
    case 'EROFS':
      return new AirlockError('E_PERMISSION', `read-only file system: cannot ${action} ${path} (EROFS)`, {
        subject: path,
        hint: 'that file system is mounted read-only; choose a location on a writable one (or remount it read-write)',
        cause: error,
      });
    case 'EACCES':
    case 'EPERM':
      return new AirlockError('E_PERMISSION', `permission denied: cannot ${action} ${path} (${errno})`, {
        subject: path,
        hint: 'check the ownership and mode of that path, or choose a location you can write to',
        cause: error,
      });
    case 'ENOENT':
      return new AirlockError('E_NOT_FOUND', `no such file or directory: cannot ${action} ${path}`, {
        subject: path,
        hint: 'check the path',
        cause: error,
      });
    default:
      return new AirlockError('E_IO', `cannot ${action} ${path}: ${(error as Error | undefined)?.message ?? String(error)}`, {
        subject: path,
        cause: error,
      });
  }
}

/**
 * A file the user names with a flag as an input — a key file, passphrase file, trust file, `--spec`,
 * `--have` — that is missing or is a directory: the command line is wrong (E_USAGE, exit 2), said
 * without the raw ENOENT/EISDIR. Other failures (permissions, I/O) stay local-machine errors (fsError).
 * The file's content is never part of the message.
 */
export function inputFileError(error: unknown, what: string, path: string, flag: string): AirlockError {
  if (error instanceof AirlockError) return error;
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  if (errno === 'ENOENT' || errno === 'ENOTDIR') {
    return new AirlockError('E_USAGE', `${what} ${path} does not exist`, { subject: path, hint: `check the path given to ${flag}`, cause: error });
  }
  if (errno === 'EISDIR') {
    return new AirlockError('E_USAGE', `${what} ${path} is a directory, not a file`, { subject: path, hint: `give ${flag} the file itself`, cause: error });
  }
  return fsError(error, `read ${what}`, path);
}

/** Removes anything that looks like a bearer token from text that may reach a user or a log. */
export function redact(text: string, secrets: readonly (string | undefined)[] = []): string {
  let out = text;
  for (const secret of secrets) {
    if (secret !== undefined && secret.length >= 4) out = out.split(secret).join('***');
  }
  return out.replace(/\bhf_[A-Za-z0-9]{8,}\b/g, 'hf_***').replace(/(authorization:\s*bearer\s+)\S+/gi, '$1***');
}
