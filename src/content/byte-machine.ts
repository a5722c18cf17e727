/**
 * Drives a parser written as a generator over bytes that arrive in chunks (a file streaming past while
 * it is hashed). The parser yields what it needs next — exactly `n` bytes, a line, `n` bytes to skip
 * unread, or whether any byte is left — and the machine answers as soon as enough bytes arrived. Only
 * the bytes of one pending request are ever kept (each request is bounded by the parser's caps), so
 * memory stays constant however large the file; skipped bytes are never copied.
 *
 * Pure: no I/O. Chunks handed to `push` may be reused by the caller afterwards: whatever the machine
 * keeps past the call is copied.
 */

export type ByteRequest =
  /** Exactly `n` bytes; answered with null when the input ends first. */
  | { t: 'take'; n: number }
  /** Bytes up to (not including) the next `\n`; null at the end of input, 'long' past `max` bytes. */
  | { t: 'line'; max: number }
  /** Drop `n` bytes unread; answered true, or false when the input ends first. */
  | { t: 'skip'; n: number }
  /** Whether at least one more byte exists (waits for it or for the end). */
  | { t: 'more' };

export type ByteAnswer = Uint8Array | 'long' | boolean | null;

export type ByteParser<R> = Generator<ByteRequest, R, ByteAnswer>;

export class ByteMachine<R> {
  readonly #parser: ByteParser<R>;
  #request: ByteRequest | undefined;
  #result: { value: R } | undefined;
  /** Bytes of the pending request gathered so far. */
  #held: Uint8Array[] = [];
  #heldBytes = 0;
  /** For 'skip': bytes still to drop. */
  #skipLeft = 0;
  #ended = false;
  /** Bytes consumed by the parser so far (its position in the input). */
  position = 0;

  constructor(parser: ByteParser<R>) {
    this.#parser = parser;
    this.#advance(undefined);
  }

  get done(): boolean {
    return this.#result !== undefined;
  }

  /** The parser's return value, once done. */
  get result(): R | undefined {
    return this.#result?.value;
  }

  #advance(answer: ByteAnswer | undefined): void {
    let step = this.#parser.next(answer as ByteAnswer);
    // zero-length requests are answered at once (they need no byte, even at the end of input)
    while (!step.done && (step.value.t === 'take' || step.value.t === 'skip') && step.value.n === 0) {
      step = this.#parser.next(step.value.t === 'take' ? new Uint8Array(0) : true);
    }
    if (step.done) {
      this.#result = { value: step.value };
      this.#request = undefined;
      this.#held = [];
      return;
    }
    this.#request = step.value;
    this.#held = [];
    this.#heldBytes = 0;
    if (step.value.t === 'skip') this.#skipLeft = step.value.n;
  }

  /** Feeds the next chunk; returns how many of its bytes the parser did not need (it finished before them). */
  push(chunk: Uint8Array): number {
    let rest = chunk;
    while (this.#request !== undefined && rest.byteLength > 0) {
      const request = this.#request;
      switch (request.t) {
        case 'more':
          this.#advance(true);
          break;
        case 'skip': {
          const n = Math.min(this.#skipLeft, rest.byteLength);
          this.#skipLeft -= n;
          this.position += n;
          rest = rest.subarray(n);
          if (this.#skipLeft === 0) this.#advance(true);
          break;
        }
        case 'take': {
          const want = request.n - this.#heldBytes;
          const n = Math.min(want, rest.byteLength);
          const part = rest.subarray(0, n);
          rest = rest.subarray(n);
          this.position += n;
          if (n === want && this.#heldBytes === 0) this.#advance(part);
          else {
            this.#held.push(part.slice());
            this.#heldBytes += n;
            if (this.#heldBytes === request.n) this.#advance(concat(this.#held, this.#heldBytes));
          }
          break;
        }
        case 'line': {
          const nl = rest.indexOf(0x0a);
          const upto = nl < 0 ? rest.byteLength : nl;
          if (this.#heldBytes + upto > request.max) {
            this.position += rest.byteLength;
            rest = rest.subarray(rest.byteLength);
            this.#advance('long');
            break;
          }
          const part = rest.subarray(0, upto);
          if (nl < 0) {
            this.#held.push(part.slice());
            this.#heldBytes += upto;
            this.position += upto;
            rest = rest.subarray(upto);
          } else {
            this.position += upto + 1;
            rest = rest.subarray(upto + 1);
            this.#advance(this.#heldBytes === 0 ? part : concat([...this.#held, part], this.#heldBytes + upto));
          }
          break;
        }
      }
    }
    return rest.byteLength;
  }

  /** Bytes the parser asks to skip right now (0 unless it waits on a skip): a reader with random access may seek past them. */
  get skipPending(): number {
    return this.#request?.t === 'skip' ? this.#skipLeft : 0;
  }

  /** The caller moved past `n` (≤ skipPending) bytes without reading them. */
  skipped(n: number): void {
    if (this.#request?.t !== 'skip' || n > this.#skipLeft || n <= 0) return;
    this.#skipLeft -= n;
    this.position += n;
    if (this.#skipLeft === 0) this.#advance(true);
  }

  /** The input ended: every pending and later request is answered with its end-of-input value. */
  end(): R {
    this.#ended = true;
    let guard = 0;
    while (this.#request !== undefined) {
      const request = this.#request;
      if (guard++ > 1_000_000) throw new Error('byte parser does not stop at the end of its input');
      switch (request.t) {
        case 'more':
          this.#advance(false);
          break;
        case 'skip':
          this.#advance(false);
          break;
        case 'take':
          this.#advance(null);
          break;
        case 'line':
          this.#advance(null);
          break;
      }
    }
    return this.#result!.value;
  }

  get ended(): boolean {
    return this.#ended;
  }
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
