/** Pure analysers of what loading a file would do (pickle opcodes, zip members, .npy, GGUF). */
export { ContentScanner, analyseAt, analyseBytes, verdictOf, type ContentAnalysis, type ContentFormat, type ContentVerdict, type ReadAt, type Verdict } from './analyse.js';
export { DEFAULT_ALLOWED_GLOBALS, GLOBAL_NAME_RE, allowList, type AllowList } from './allowlist.js';
export { pickleImportScan, type PickleImportScan } from './hub-status.js';
export { ByteMachine } from './byte-machine.js';
export { walkPickles, type PickleScan } from './pickle.js';
export { walkGguf, chatTemplateFindings, type GgufScan } from './gguf.js';
export { DEFAULT_CONTENT_POLICY, checkGlobalNames, parsePolicyFile, refusal, type ContentPolicy, type FileContent } from './policy.js';
