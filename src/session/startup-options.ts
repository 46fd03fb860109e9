// The startup packet's `options` parameter, as PostgreSQL's postmaster reads
// it: command-line switches for the backend, of which rolegate honours only
// `-c name=value` (rolegate.role, and the configured passthrough parameters).

/**
 * The startup `options` parameter: space-separated command-line switches, of
 * which only `-c name=value` / `--name=value` are meaningful (backslash escapes
 * a space, as in libpq). Returns the pairs or an error message.
 */
export function parseOptions(options: string): Array<[string, string]> | string {
  const words: string[] = [];
  let cur = '';
  let escaped = false;
  for (const ch of options) {
    if (escaped) {
      cur += ch;
      escaped = false;
    } else if (ch === '\\') {
      escaped = true;
    } else if (ch === ' ' || ch === '\t') {
      if (cur !== '') words.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (cur !== '') words.push(cur);
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i < words.length; i++) {
    let w = words[i] as string;
    if (w === '-c') {
      const next = words[++i];
      if (next === undefined) return 'startup option "-c" needs name=value';
      w = next;
    } else if (w.startsWith('-c')) {
      w = w.slice(2);
    } else if (w.startsWith('--')) {
      w = w.slice(2);
    } else {
      return `startup option "${w}" is not allowed through rolegate (only -c name=value)`;
    }
    const eq = w.indexOf('=');
    if (eq <= 0) return `startup option "${w}" needs name=value`;
    pairs.push([w.slice(0, eq).replaceAll('-', '_'), w.slice(eq + 1)]);
  }
  return pairs;
}
