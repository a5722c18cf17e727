/**
 * The bundle ↔ ModelPack mapping (CNCF model-spec v0.0.7+, see docs/oci.md). Pure: no I/O.
 *
 * One artifact per bundle repo. Each payload file is one raw layer whose digest is the file's SHA-256
 * from the signed SHA256SUMS, titled and annotated with its path in the repo. The bundle's trust
 * material (SHA256SUMS, SHA256SUMS.asc, manifest.json) travels as three more titled layers, marked with
 * our own role annotation: a node verifies the artifact against its pinned keys with nothing else, and
 * an auditor with curl, gpg and jq can too. Readers accept the older `vnd.cnai` / `org.cnai` prefixes.
 */
import { AirlockError } from '../errors.js';
import type { Manifest, ManifestRepo } from '../bundle/manifest.js';
import { MANIFEST_NAME, SIGNATURE_NAME, SUMS_NAME } from '../bundle/format.js';

export const OCI_MANIFEST_TYPE = 'application/vnd.oci.image.manifest.v1+json';
export const MODEL_ARTIFACT_TYPE = 'application/vnd.cncf.model.manifest.v1+json';
export const MODEL_CONFIG_TYPE = 'application/vnd.cncf.model.config.v1+json';
const LEGACY_ARTIFACT_TYPE = 'application/vnd.cnai.model.manifest.v1+json';
const LEGACY_CONFIG_TYPE = 'application/vnd.cnai.model.config.v1+json';

export const ANNOTATION_FILEPATH = 'org.cncf.model.filepath';
export const ANNOTATION_METADATA = 'org.cncf.model.file.metadata+json';
export const ANNOTATION_UNTESTED = 'org.cncf.model.file.mediatype.untested';
export const ANNOTATION_TITLE = 'org.opencontainers.image.title';
/** Which piece of the bundle's trust material a layer is. */
export const ANNOTATION_ROLE = 'org.model-airlock.role';
/** A manifest this size or larger is refused (distribution and zot cap manifests at 4 MiB). */
export const MAX_OCI_MANIFEST_BYTES = 4 * 1024 * 1024;

export type TrustRole = 'sums' | 'signature' | 'manifest';
export const TRUST_ROLES: Readonly<Record<TrustRole, string>> = { sums: SUMS_NAME, signature: SIGNATURE_NAME, manifest: MANIFEST_NAME };

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface OciManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

type Kind = 'weight' | 'weight.config' | 'doc' | 'code' | 'dataset';

/** The ModelPack kind of a file, and whether it was a guess (spec: `mediatype.untested`). */
export function layerKind(repo: Pick<ManifestRepo, 'type'>, path: string): { kind: Kind; guessed: boolean } {
  if (repo.type === 'dataset') return { kind: 'dataset', guessed: false };
  const name = path.split('/').pop()!.toLowerCase();
  if (/\.(safetensors|bin|pt|pth|gguf|onnx|h5|msgpack|ckpt|tflite|mlmodel|npz|pdparams|ot)$/.test(name)) return { kind: 'weight', guessed: false };
  if (/^(readme|license|licence|notice|copying|citation)(\.|$)/.test(name) || /\.(md|rst)$/.test(name)) return { kind: 'doc', guessed: false };
  if (/\.(py|sh|ipynb|js|ts|cpp|c|h|cu)$/.test(name)) return { kind: 'code', guessed: false };
  if (/\.(json|yaml|yml|txt|model|tiktoken|vocab|jinja|spm)$/.test(name) || /^(vocab|merges)/.test(name)) return { kind: 'weight.config', guessed: false };
  return { kind: 'doc', guessed: true };
}

const ZERO_TIME = '1970-01-01T00:00:00Z';

function fileLayer(repo: ManifestRepo, path: string, sha256: string, size: number): Descriptor {
  const { kind, guessed } = layerKind(repo, path);
  return {
    mediaType: `application/vnd.cncf.model.${kind}.v1.raw`,
    digest: `sha256:${sha256}`,
    size,
    annotations: {
      [ANNOTATION_FILEPATH]: path,
      // bundles carry normalised metadata (mode 0644, uid/gid 0, mtime 0): the same holds here
      [ANNOTATION_METADATA]: JSON.stringify({ name: path, mode: 0o644, uid: 0, gid: 0, size, mtime: ZERO_TIME, typeflag: 48 }),
      [ANNOTATION_UNTESTED]: guessed ? 'true' : 'false',
      [ANNOTATION_TITLE]: path,
    },
  };
}

/** Titles of the trust layers: the plain names, unless the repo holds a file of that name (then under `.airlock/`). */
export function trustTitle(role: TrustRole, repoPaths: ReadonlySet<string>): string {
  const name = TRUST_ROLES[role];
  return repoPaths.has(name) ? `.airlock/${name}` : name;
}

export interface TrustBlob {
  role: TrustRole;
  sha256: string;
  size: number;
}

export interface ModelPackArtifact {
  manifest: OciManifest;
  /** Exact bytes of the config blob (its digest is `manifest.config.digest`). */
  configBytes: Buffer;
}

/**
 * The artifact of one repo. `trust` are the bundle's SHA256SUMS, signature (absent for an unsigned bundle)
 * and manifest.json. Deterministic: the same bundle always gives the same manifest bytes, so a re-publish
 * changes nothing in the registry.
 */
export function buildArtifact(bundle: Manifest, repo: ManifestRepo, trust: readonly TrustBlob[], sha256OfConfig: (bytes: Buffer) => string): ModelPackArtifact {
  const paths = new Set(repo.files.map((f) => f.path));
  const layers: Descriptor[] = repo.files.map((f) => fileLayer(repo, f.path, f.sha256, f.size));
  for (const t of trust) {
    const title = trustTitle(t.role, paths);
    layers.push({
      mediaType: 'application/vnd.cncf.model.doc.v1.raw',
      digest: `sha256:${t.sha256}`,
      size: t.size,
      annotations: {
        [ANNOTATION_FILEPATH]: title,
        [ANNOTATION_METADATA]: JSON.stringify({ name: title, mode: 0o644, uid: 0, gid: 0, size: t.size, mtime: ZERO_TIME, typeflag: 48 }),
        [ANNOTATION_UNTESTED]: 'false',
        [ANNOTATION_ROLE]: t.role,
        [ANNOTATION_TITLE]: title,
      },
    });
  }
  const weights = repo.files.map((f) => f.path.toLowerCase());
  const format = weights.some((p) => p.endsWith('.safetensors'))
    ? 'safetensors'
    : weights.some((p) => p.endsWith('.gguf'))
      ? 'gguf'
      : weights.some((p) => p.endsWith('.onnx'))
        ? 'onnx'
        : undefined;
  const config = {
    descriptor: {
      createdAt: bundle.createdAt,
      name: repo.id,
      revision: repo.commit,
      sourceURL: sourceUrl(repo),
    },
    config: format === undefined ? {} : { format },
    modelfs: { type: 'layers', diffIds: layers.map((l) => l.digest) },
  };
  const configBytes = Buffer.from(JSON.stringify(config), 'utf8');
  return {
    configBytes,
    manifest: {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST_TYPE,
      artifactType: MODEL_ARTIFACT_TYPE,
      config: { mediaType: MODEL_CONFIG_TYPE, digest: `sha256:${sha256OfConfig(configBytes)}`, size: configBytes.byteLength },
      layers,
      annotations: {
        'org.opencontainers.image.created': bundle.createdAt,
        'org.opencontainers.image.revision': repo.commit,
        'org.opencontainers.image.source': sourceUrl(repo),
        'org.opencontainers.image.title': repo.id,
        'org.model-airlock.repo': `${repo.type === 'dataset' ? 'datasets/' : ''}${repo.id}@${repo.revision}`,
      },
    },
  };
}

function sourceUrl(repo: ManifestRepo): string {
  if (repo.source.kind === 'hf-cache') return repo.source.endpoint;
  const base = repo.source.endpoint.replace(/\/+$/, '');
  return repo.source.kind === 'modelscope' ? `${base}/${repo.type === 'dataset' ? 'datasets' : 'models'}/${repo.id}` : `${base}/${repo.type === 'dataset' ? 'datasets/' : ''}${repo.id}`;
}

/** One layer of a pulled artifact, in our own terms. */
export interface ArtifactLayer {
  descriptor: Descriptor;
  sha256: string;
  size: number;
  /** filepath (or, failing that, title), when present. */
  path: string | undefined;
  role: TrustRole | undefined;
}

export interface ParsedArtifact {
  manifest: OciManifest;
  layers: ArtifactLayer[];
}

const DIGEST = /^sha256:([a-f0-9]{64})$/;

/** Parses a manifest a registry served (hostile input): every problem at once, in one AirlockError. */
export function parseArtifactManifest(bytes: Uint8Array, subject: string): ParsedArtifact {
  const problems: string[] = [];
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (cause) {
    throw new AirlockError('E_MANIFEST_INVALID', `${subject}: the OCI manifest is not JSON`, { subject, cause, hint: 'the registry answered something that is not a manifest' });
  }
  const m = value as Partial<OciManifest> | null;
  if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new AirlockError('E_MANIFEST_INVALID', `${subject}: the OCI manifest is not an object`, { subject });
  if (m.schemaVersion !== 2) problems.push('schemaVersion is not 2');
  if (m.mediaType !== undefined && m.mediaType !== OCI_MANIFEST_TYPE) problems.push(`mediaType ${JSON.stringify(m.mediaType)} is not ${OCI_MANIFEST_TYPE}`);
  const configType = m.config?.mediaType;
  const artifactType = m.artifactType ?? configType;
  const isModel =
    (artifactType === MODEL_ARTIFACT_TYPE || artifactType === LEGACY_ARTIFACT_TYPE || artifactType === MODEL_CONFIG_TYPE || artifactType === LEGACY_CONFIG_TYPE) &&
    (configType === MODEL_CONFIG_TYPE || configType === LEGACY_CONFIG_TYPE);
  if (!isModel) problems.push(`not a ModelPack model artifact (artifactType ${JSON.stringify(m.artifactType)}, config ${JSON.stringify(configType)})`);
  const layers: ArtifactLayer[] = [];
  if (!Array.isArray(m.layers)) problems.push('layers is not a list');
  else {
    m.layers.forEach((raw: unknown, i) => {
      const d = raw as Partial<Descriptor> | null;
      const where = `layer ${i}`;
      if (d === null || typeof d !== 'object') return void problems.push(`${where} is not an object`);
      const digest = typeof d.digest === 'string' ? DIGEST.exec(d.digest) : null;
      if (digest === null) return void problems.push(`${where}: digest ${JSON.stringify(d.digest)} is not sha256:<64 hex>`);
      if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) return void problems.push(`${where}: size is not a byte count`);
      if (typeof d.mediaType !== 'string') return void problems.push(`${where}: mediaType is missing`);
      const annotations = d.annotations ?? {};
      if (typeof annotations !== 'object' || Array.isArray(annotations) || Object.values(annotations).some((v) => typeof v !== 'string')) {
        return void problems.push(`${where}: annotations are not strings`);
      }
      const a = annotations;
      const path = a[ANNOTATION_FILEPATH] ?? a['org.cnai.model.filepath'] ?? a[ANNOTATION_TITLE];
      const roleText = a[ANNOTATION_ROLE];
      const role = roleText === 'sums' || roleText === 'signature' || roleText === 'manifest' ? roleText : undefined;
      if (roleText !== undefined && role === undefined) problems.push(`${where}: unknown ${ANNOTATION_ROLE} ${JSON.stringify(roleText)}`);
      layers.push({ descriptor: d as Descriptor, sha256: digest[1]!, size: d.size, path, role });
    });
  }
  if (problems.length > 0) {
    throw new AirlockError('E_MANIFEST_INVALID', `${subject}: ${problems.slice(0, 10).join('; ')}${problems.length > 10 ? ` … and ${problems.length - 10} more` : ''}`, {
      subject,
      hint: 'this is not an artifact `airlock publish` made (or it was altered in the registry)',
    });
  }
  return { manifest: m as OciManifest, layers };
}
