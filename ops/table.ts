// Plain-text tables and the small number formats the operator commands print.

export type Cell = string | number | null | undefined;

/**
 * Renders rows under a header, columns padded to their widest cell, two spaces apart.
 * Numbers (and numeric-looking right-aligned columns) are right-aligned; null prints as '-'.
 */
export function renderTable(headers: readonly string[], rows: readonly (readonly Cell[])[], options: { right?: readonly number[] } = {}): string {
  const text = (cell: Cell) => (cell === null || cell === undefined ? '-' : typeof cell === 'number' ? formatNumber(cell) : cell);
  const right = new Set(options.right ?? []);
  for (const row of rows) for (const [i, cell] of row.entries()) if (typeof cell === 'number') right.add(i);
  const cells = [headers.map(String), ...rows.map((row) => headers.map((_, i) => text(row[i])))];
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => row[i].length)));
  const lines = cells.map((row) =>
    row
      .map((cell, i) => (right.has(i) ? cell.padStart(widths[i]) : i === row.length - 1 ? cell : cell.padEnd(widths[i])))
      .join('  ')
      .trimEnd(),
  );
  return lines.join('\n');
}

export function formatNumber(value: number): string {
  if (Number.isInteger(value)) return String(value);
  return value >= 100 ? value.toFixed(0) : value.toFixed(1);
}

/** 850ms, 12.3s, 4m05s, 2h10m, 3d04h. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const pad = (n: number) => String(n).padStart(2, '0');
  const total = Math.floor(s);
  if (total < 3600) return `${Math.floor(total / 60)}m${pad(total % 60)}s`;
  if (total < 86_400) return `${Math.floor(total / 3600)}h${pad(Math.floor((total % 3600) / 60))}m`;
  return `${Math.floor(total / 86_400)}d${pad(Math.floor((total % 86_400) / 3600))}h`;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** One line, at most `max` characters, an ellipsis marking a cut. */
export function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length <= max ? flat : `${flat.slice(0, Math.max(0, max - 1))}…`;
}
