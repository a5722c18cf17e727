/** The bench's "files" scenario: `count` small JSON files in folders of 100 (one definition for every user). */
export function manyFiles(count: number): Array<{ path: string; data: string }> {
  const files: Array<{ path: string; data: string }> = [];
  for (let i = 0; i < count; i++) files.push({ path: `data/shard-${String(Math.floor(i / 100)).padStart(3, '0')}/row-${i}.json`, data: `{"i": ${i}, "text": "${'x'.repeat(i % 512)}"}\n` });
  return files;
}
