// A section of bench/RESULTS.md that one script writes and the others keep as it was: between
// markers, so each writer replaces only its own (the moves and per-feature sections; the cluster
// section predates this and has its own copy in clusterReport.ts).
export interface MarkedSection {
  /** The section in `markdown`, markers included, or undefined. */
  preserved(markdown: string): string | undefined;
  /** `markdown` with the section replaced by `section` (appended when it has none; unchanged when `section` is undefined). */
  replaced(markdown: string, section: string | undefined): string;
  /** The section itself, markers included: `body` is its markdown without a heading. */
  render(body: string): string;
}

export function markedSection(beginMarker: string, endMarker: string, heading: string): MarkedSection {
  const preserved = (markdown: string) => {
    const begin = markdown.indexOf(beginMarker);
    const end = markdown.indexOf(endMarker);
    return begin >= 0 && end > begin ? markdown.slice(begin, end + endMarker.length) : undefined;
  };
  return {
    preserved,
    replaced(markdown, section) {
      if (section === undefined) return markdown;
      const existing = preserved(markdown);
      if (existing) return markdown.replace(existing, () => section);
      return `${markdown.trimEnd()}\n\n${section}\n`;
    },
    render: (body) => [beginMarker, heading, '', body.trim(), '', endMarker].join('\n'),
  };
}
