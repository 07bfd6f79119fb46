// The "Shard moves" section of bench/RESULTS.md: written by `node --import tsx bench/moves.ts`
// (bench/MOVES.md has the full run), kept as it was by `npm run bench` (bench/lib/report.ts) and by
// `npm run bench:cluster`, as the cluster section is. Between markers, so each writer replaces only
// its own section.
const beginMarker = '<!-- moves-bench:begin (written by bench/moves.ts; npm run bench keeps it) -->';
const endMarker = '<!-- moves-bench:end -->';

/** The moves section of an existing RESULTS.md, markers included, or undefined. */
export function preservedMovesSection(markdown: string): string | undefined {
  const begin = markdown.indexOf(beginMarker);
  const end = markdown.indexOf(endMarker);
  return begin >= 0 && end > begin ? markdown.slice(begin, end + endMarker.length) : undefined;
}

/** `markdown` with its moves section replaced by `section` (appended when it has none; unchanged when `section` is undefined). */
export function withMovesSection(markdown: string, section: string | undefined): string {
  if (section === undefined) return markdown;
  const existing = preservedMovesSection(markdown);
  if (existing) return markdown.replace(existing, () => section);
  return `${markdown.trimEnd()}\n\n${section}\n`;
}

/** The section itself, markers included: `body` is its markdown without a heading. */
export function renderMovesSection(body: string): string {
  return [beginMarker, '## Shard moves under load (bench/moves.ts)', '', body.trim(), '', endMarker].join('\n');
}
