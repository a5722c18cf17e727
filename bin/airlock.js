#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/ (built by `npm run build`, run automatically by `npm ci`).
import { setFlagsFromString } from 'node:v8';

// undici parses HTTP with llhttp compiled to WebAssembly. Once it is hot, V8 recompiles it with its
// optimising tier on a background thread, a ~40 MiB burst of native memory in the middle of a
// publish or pull (docs/performance.md). The baseline tier parses as fast for what we do (bodies are
// passed through, not parsed), so keep it. Set before the HTTP client is loaded.
setFlagsFromString('--liftoff-only');
const { main } = await import('../dist/cli/main.js');

process.exitCode = await main(process.argv);
// Interrupted (Ctrl-C, SIGTERM): the command has reported it and left nothing half-done that matters
// (import rolled back; export's partial bundle records progress only after each write, as a re-run
// expects after a kill). Downloads still in flight are abandoned now rather than waited for.
if (process.exitCode === 130) process.exit(130);
