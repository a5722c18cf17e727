/** `airlock serve`: a read-only, verifying Hub (and ModelScope) endpoint over the local caches. */
export { startServer, type RunningServer, type ServeEvent, type ServeOptions } from './server.js';
export type { AccessEntry } from './http-util.js';
export type { SecurityStatusProvider } from './hf-api.js';
export { loadServeConfig, parseListen, type ServeFlags } from './config.js';
