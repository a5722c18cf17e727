/** OCI registries, public face: publish a verified bundle as ModelPack artifacts, pull one into a cache, inspect one. */
export { RegistryClient, type RegistryClientOptions } from './client.js';
export { findCredentials, type Credentials } from './credentials.js';
export { parseOciReference, formatOciReference, type OciReference } from './reference.js';
export { publishBundle, type PublishOptions, type PublishResult, type PublishedRepo } from './publish.js';
export { pullArtifact, readArtifact, type PullOptions, type PullResult, type CheckedArtifact } from './pull.js';
export { openRegistry, type OpenRegistryOptions } from './open.js';
