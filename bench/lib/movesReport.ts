// The "Shard moves" section of bench/RESULTS.md: written by `node --import tsx bench/moves.ts`
// (bench/MOVES.md has the full run), kept as it was by `npm run bench` (bench/lib/report.ts) and by
// `npm run bench:cluster`, as the cluster section is. Between markers, so each writer replaces only
// its own section.
import { markedSection } from './markedSection.ts';

const section = markedSection(
  '<!-- moves-bench:begin (written by bench/moves.ts; npm run bench keeps it) -->',
  '<!-- moves-bench:end -->',
  '## Shard moves under load (bench/moves.ts)',
);

/** The moves section of an existing RESULTS.md, markers included, or undefined. */
export const preservedMovesSection = section.preserved;

/** `markdown` with its moves section replaced by `section` (appended when it has none; unchanged when `section` is undefined). */
export const withMovesSection = section.replaced;

/** The section itself, markers included: `body` is its markdown without a heading. */
export const renderMovesSection = section.render;
