// Identifier rules as PostgreSQL applies them (parser/scansup.c).
// libpg-query's scanner already folds unquoted identifiers, strips quotes, decodes
// U&"..." escapes and truncates; truncating again here is idempotent and keeps the
// contract true whatever path a name took through the tree.

/** NAMEDATALEN - 1: the longest identifier PostgreSQL keeps, in bytes. */
export const MAX_IDENTIFIER_BYTES = 63;

/**
 * truncate_identifier(): cut to 63 UTF-8 bytes without splitting a character
 * (pg_mbcliplen). A UTF-16 unit encodes to at most 3 bytes, so 21 units or fewer
 * always fit and skip the byte count (the common case).
 */
export function truncateIdentifier(name: string): string {
  if (name.length <= 21) return name;
  let bytes = 0;
  for (let i = 0; i < name.length; i++) {
    const unit = name.charCodeAt(i);
    let width: number;
    let units = 1;
    if (unit < 0x80) width = 1;
    else if (unit < 0x800) width = 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < name.length) {
      const low = name.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) {
        width = 4;
        units = 2;
      } else width = 3;
    } else width = 3;
    if (bytes + width > MAX_IDENTIFIER_BYTES) return name.slice(0, i);
    bytes += width;
    i += units - 1;
  }
  return name;
}

/**
 * GUC names are case-insensitive (guc.c: guc_name_compare folds ASCII A-Z only), so a
 * parameter is reported with ASCII letters lower-cased whether or not it was quoted.
 */
export function parameterName(name: string): string {
  return /[A-Z]/.test(name) ? name.replace(/[A-Z]+/g, (run) => run.toLowerCase()) : name;
}
