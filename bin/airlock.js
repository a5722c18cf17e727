#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/ (built by `npm run build`, run automatically by `npm ci`).
import { main } from '../dist/cli/main.js';

process.exitCode = await main(process.argv);
// Interrupted (Ctrl-C, SIGTERM): the command has reported it and left nothing half-done that matters
// (import rolled back; export's partial bundle records progress only after each write, as a re-run
// expects after a kill). Downloads still in flight are abandoned now rather than waited for.
if (process.exitCode === 130) process.exit(130);
