/**
 * The offline side, public face: `importBundle` (verify + stage in one pass, then commit atomically
 * into the hub cache), `verifyBundle` (the same checks, writes nothing) and `inspectBundle` (no keys;
 * the signature is not checked).
 */
export { importBundle, type ImportOptions, type ImportResult, type ImportedRepo } from './import.js';
export { verifyBundle, type VerifyOptions, type VerifyResult } from './verify.js';
export { inspectBundle, type InspectResult } from './inspect.js';
export { auditSummary, verificationRecord, type ContentOutcome, type RecordInput, type RepoSummary, type VerificationRecord } from './summary.js';
export { hashFile } from './verify.js';
