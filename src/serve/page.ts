/**
 * The page for people: `GET /` lists the repos, `GET /{repo}` (`/datasets/{repo}`, `/modelscope/{owner}/{name}`)
 * shows each revision with its refs, files and sizes and — from import's evidence record — who signed it
 * (fingerprint, user id, signature time), the bundle and source commit, when it was imported and last
 * re-verified. Plain server-side HTML, no script, every value escaped.
 */
import { formatBytes } from '../format.js';
import { readdir } from 'node:fs/promises';
import type { EvidenceRecord } from '../cache/evidence.js';
import { unsafeRepoIdReason } from '../fs/safe-path.js';
import { parseFolderName, readServedRepo, type ServedRepo } from './hf-view.js';
import { decodeSegments, htmlEscape as h, plainSegment, sendText, type RequestContext } from './http-util.js';
import { currentModelScopeRecord, listModelScopeRecords } from './modelscope-api.js';

export interface PageDeps {
  cacheDir: string;
  modelscopeDir: string | undefined;
}

const STYLE = `body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}code{font-size:.92em}.num{text-align:right}h2{margin-top:2em}.muted{color:#666}`;

function layout(title: string, body: string): string {
  return `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>${h(title)}</title><style>${STYLE}</style></head>\n<body>\n<p><a href="/">airlock serve</a></p>\n${body}\n</body></html>\n`;
}

const bytes = (n: number): string => formatBytes(n, 1);

function repoHref(type: 'model' | 'dataset', id: string): string {
  return `/${type === 'dataset' ? 'datasets/' : ''}${id.split('/').map(encodeURIComponent).join('/')}`;
}

function evidenceTable(e: EvidenceRecord | undefined): string {
  if (e === undefined) return '<p class="muted">No evidence record (not imported by airlock, or imported before records were kept).</p>';
  const signers = e.signers.length
    ? e.signers.map((s) => `<code>${h(s.fingerprint)}</code> ${h(s.userIds.join(', '))} <span class="muted">signed ${h(s.signedAt)}</span>`).join('<br>')
    : '<strong>unsigned</strong>';
  return `<table class="evidence">
<tr><th>Signed by</th><td class="signer">${signers}</td></tr>
<tr><th>Bundle</th><td><code>${h(e.bundle.name)}</code>${e.bundle.sha256 ? ` sha256 <code>${h(e.bundle.sha256)}</code>` : ''} (${h(bytes(e.bundle.bytes))})</td></tr>
<tr><th>Source</th><td>${h(e.source.kind)} <code>${h(e.source.endpoint)}</code>, revision <code>${h(e.revision)}</code>, commit <code>${h(e.commit)}</code></td></tr>
<tr><th>Imported</th><td>${h(e.importedAt)}</td></tr>
<tr><th>Last re-verified</th><td>${h(e.lastVerifiedAt)}</td></tr>
</table>`;
}

function hfRepoPage(repo: ServedRepo): string {
  const base = repoHref(repo.type, repo.id);
  const parts = repo.revisions.map((rev) => {
    const rows = rev.files
      .map((f) => `<tr><td><a href="${base}/resolve/${rev.commit}/${f.path.split('/').map(encodeURIComponent).join('/')}">${h(f.path)}</a></td><td class="num">${h(bytes(f.size))}</td><td><code>${h(f.etag)}</code>${f.lfs ? ' (LFS)' : ''}</td></tr>`)
      .join('\n');
    return `<h2 id="${rev.commit}">Revision <code>${rev.commit}</code></h2>
<p>Refs: ${rev.refs.length ? rev.refs.map((r) => `<code>${h(r)}</code>`).join(', ') : '<span class="muted">none</span>'}</p>
${evidenceTable(rev.evidence)}
<table class="files"><tr><th>File</th><th>Size</th><th>Blob</th></tr>
${rows}
</table>`;
  });
  return layout(`${repo.id} — airlock serve`, `<h1>${h(repo.type)} ${h(repo.id)}</h1>\n${parts.join('\n')}`);
}

function modelScopePage(e: EvidenceRecord): string {
  const rows = e.files.map((f) => `<tr><td>${h(f.path)}</td><td class="num">${h(bytes(f.size))}</td><td><code>${h(f.sha256)}</code></td></tr>`).join('\n');
  return layout(
    `${e.id} (ModelScope) — airlock serve`,
    `<h1>ModelScope ${h(e.type)} ${h(e.id)}</h1>
<h2>Revision <code>${h(e.revision)}</code> (commit <code>${h(e.commit)}</code>)</h2>
${evidenceTable(e)}
<table class="files"><tr><th>File</th><th>Size</th><th>SHA-256</th></tr>
${rows}
</table>`,
  );
}

async function indexPage(deps: PageDeps): Promise<string> {
  const names = (await readdir(deps.cacheDir).catch(() => [] as string[])).sort();
  const rows: string[] = [];
  for (const name of names) {
    const parsed = parseFolderName(name);
    if (!parsed) continue;
    const repo = await readServedRepo(deps.cacheDir, parsed.type, parsed.id).catch(() => undefined);
    if (!repo) continue;
    for (const rev of repo.revisions) {
      const signer = rev.evidence?.signers[0];
      rows.push(
        `<tr><td>${h(repo.type)}</td><td><a href="${repoHref(repo.type, repo.id)}">${h(repo.id)}</a></td><td><a href="${repoHref(repo.type, repo.id)}#${rev.commit}"><code>${rev.commit.slice(0, 12)}</code></a></td><td>${h(rev.refs.join(', '))}</td><td class="num">${rev.files.length}</td><td class="num">${h(bytes(rev.files.reduce((n, f) => n + f.size, 0)))}</td><td>${signer ? h(signer.userIds[0] ?? signer.fingerprint) : '<span class="muted">—</span>'}</td></tr>`,
      );
    }
  }
  const ms = deps.modelscopeDir === undefined ? [] : await listModelScopeRecords(deps.modelscopeDir);
  const msRows = ms.map(
    (e) =>
      `<tr><td>${h(e.type)}</td><td><a href="/modelscope/${e.id.split('/').map(encodeURIComponent).join('/')}">${h(e.id)}</a></td><td><code>${h(e.revision)}</code></td><td class="num">${e.files.length}</td><td class="num">${h(bytes(e.files.reduce((n, f) => n + f.size, 0)))}</td><td>${h(e.signers[0]?.userIds[0] ?? '—')}</td></tr>`,
  );
  return layout(
    'airlock serve',
    `<h1>Verified models and datasets</h1>
<p>Hugging Face clients: set <code>HF_ENDPOINT</code> to this server. Only bytes that match their verified names are served.</p>
<h2>Hugging Face cache</h2>
<table class="repos"><tr><th>Type</th><th>Repo</th><th>Commit</th><th>Refs</th><th>Files</th><th>Size</th><th>Signed by</th></tr>
${rows.join('\n') || '<tr><td colspan="7" class="muted">nothing imported yet</td></tr>'}
</table>
${deps.modelscopeDir === undefined ? '' : `<h2>ModelScope cache</h2>
<table class="repos"><tr><th>Type</th><th>Repo</th><th>Revision</th><th>Files</th><th>Size</th><th>Signed by</th></tr>
${msRows.join('\n') || '<tr><td colspan="6" class="muted">nothing imported yet</td></tr>'}
</table>`}`,
  );
}

function notFound(ctx: RequestContext, what: string): void {
  ctx.log.error = `${what} not found`;
  sendText(ctx, 404, 'text/html; charset=utf-8', layout('Not found', `<h1>Not found</h1><p>${h(what)} is not in this cache.</p>`));
}

/** `raw` = the request's path segments (still encoded). */
export async function handlePage(ctx: RequestContext, deps: PageDeps, raw: readonly string[]): Promise<void> {
  if (ctx.req.method === 'POST') {
    ctx.log.status = 405;
    ctx.res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Length': '0' });
    ctx.res.end();
    return;
  }
  const html = 'text/html; charset=utf-8';
  const segments = decodeSegments(raw.filter((s, i) => !(s === '' && i === raw.length - 1)));
  if (segments === undefined || !segments.every(plainSegment)) return notFound(ctx, 'that path');
  if (segments.length === 0) return sendText(ctx, 200, html, await indexPage(deps));
  if (segments[0] === 'modelscope' && segments.length === 3 && deps.modelscopeDir !== undefined) {
    const record = await currentModelScopeRecord(deps.modelscopeDir, 'model', segments[1]!, segments[2]!);
    ctx.log.repo = `${segments[1]}/${segments[2]}`;
    return record ? sendText(ctx, 200, html, modelScopePage(record)) : notFound(ctx, `${segments[1]}/${segments[2]}`);
  }
  const type = segments[0] === 'datasets' ? 'dataset' : 'model';
  const idParts = type === 'dataset' ? segments.slice(1) : segments;
  if (idParts.length < 1 || idParts.length > 2) return notFound(ctx, segments.join('/'));
  const id = idParts.join('/');
  if (unsafeRepoIdReason(id) !== undefined) return notFound(ctx, id);
  ctx.log.repo = id;
  const repo = await readServedRepo(deps.cacheDir, type, id);
  return repo ? sendText(ctx, 200, html, hfRepoPage(repo)) : notFound(ctx, id);
}
