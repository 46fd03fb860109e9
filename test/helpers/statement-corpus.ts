// Statements for differential tests, drawn from the repository's own SQL
// corpora: the string literals of the SQL fuzz test, the facts unit tests and
// the security integration tests (templates are filled in where their
// placeholders are constants of the same file), plus the same statements as
// EXPLAIN, PREPARE, inside a transaction-control pair and joined with their
// neighbour into one multi-statement text — shapes the proxy decides in
// special ways. Read from the sources at test time, so the corpus follows the
// tests as they change. Deterministic: same sources, same list, same order.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { parseStatements } from '../../src/sql/parser.ts';
import { REPO } from './proxy.ts';

export const CORPUS_SOURCES = [
  'test/fuzz/sql-parser.test.ts',
  'test/unit/sql-facts.test.ts',
  'test/integration/security-differential.test.ts',
  'test/integration/security-extended.test.ts',
  'test/integration/security-hiding.test.ts',
  'test/integration/security-protocol-abuse.test.ts',
  'test/integration/security-role-escape.test.ts',
  'test/integration/security-side-doors.test.ts',
  'test/integration/security-transactions.test.ts',
] as const;

/** A text that starts (after comments and blanks) like a SQL statement. */
const LOOKS_LIKE_SQL =
  /^\s*(?:(?:\/\*[\s\S]*?\*\/|--[^\n]*\n)\s*)*(?:\(|(?:SELECT|INSERT|UPDATE|DELETE|MERGE|WITH|VALUES|TABLE|CREATE|ALTER|DROP|TRUNCATE|GRANT|REVOKE|SET|RESET|SHOW|BEGIN|START|COMMIT|ROLLBACK|END|ABORT|SAVEPOINT|RELEASE|PREPARE|EXECUTE|DEALLOCATE|DECLARE|FETCH|MOVE|CLOSE|COPY|DO|CALL|EXPLAIN|LOCK|LISTEN|UNLISTEN|NOTIFY|DISCARD|VACUUM|ANALYZE|CLUSTER|REINDEX|CHECKPOINT|LOAD|COMMENT|REFRESH|IMPORT|SECURITY|REASSIGN)\b)/i;

/** Calls whose string arguments are titles or messages, not SQL: test titles, assertion messages. */
function skippedArgument(node: ts.Node): boolean {
  const call = node.parent;
  if (call === undefined || !ts.isCallExpression(call)) return false;
  const index = call.arguments.indexOf(node as ts.Expression);
  if (index < 0) return false;
  const callee = call.expression.getText();
  if (/^(test|describe|it|suite)(\.\w+)?$/.test(callee)) return index === 0;
  if (/^assert\.(ok|rejects|throws)$/.test(callee)) return index >= 1;
  if (/^assert\./.test(callee)) return index >= 2;
  return false;
}

/** `const NAME = 'text'` (or a number, or a template of constants) anywhere in the file; the first binding of a name wins. */
function constants(sf: ts.SourceFile): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (node: ts.Node): void => {
    if (ts.isVariableDeclaration(node) && ts.isIdentifier(node.name) && node.initializer !== undefined && (node.parent.flags & ts.NodeFlags.Const) !== 0) {
      const value = evaluate(node.initializer, out);
      if (value !== null && !out.has(node.name.text)) out.set(node.name.text, value);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

/** The value of a string-valued expression built from literals and known constants; null when it is anything else. */
function evaluate(node: ts.Expression, known: ReadonlyMap<string, string>): string | null {
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return node.text;
  if (ts.isNumericLiteral(node)) return node.text;
  if (ts.isParenthesizedExpression(node)) return evaluate(node.expression, known);
  if (ts.isIdentifier(node)) return known.get(node.text) ?? null;
  if (ts.isTemplateExpression(node)) {
    let text = node.head.text;
    for (const span of node.templateSpans) {
      const value = evaluate(span.expression, known);
      if (value === null) return null;
      text += value + span.literal.text;
    }
    return text;
  }
  if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.PlusToken) {
    const left = evaluate(node.left, known);
    const right = evaluate(node.right, known);
    return left === null || right === null ? null : left + right;
  }
  // 'x'.repeat(n), NAME.toUpperCase()
  if (ts.isCallExpression(node) && ts.isPropertyAccessExpression(node.expression)) {
    const target = evaluate(node.expression.expression, known);
    if (target === null) return null;
    const method = node.expression.name.text;
    const args = node.arguments.map((a) => evaluate(a, known));
    const only = args.length === 1 ? args[0] : null;
    if (method === 'repeat' && typeof only === 'string' && /^\d+$/.test(only) && Number(only) <= 1000) return target.repeat(Number(only));
    if (method === 'toUpperCase' && args.length === 0) return target.toUpperCase();
    if (method === 'toLowerCase' && args.length === 0) return target.toLowerCase();
  }
  return null;
}

/** SQL-looking string literals (and fully resolvable templates) of one source file, in source order. */
export function sqlLiterals(file: string): string[] {
  const sf = ts.createSourceFile(file, readFileSync(path.join(REPO, file), 'utf8'), ts.ScriptTarget.Latest, true);
  const known = constants(sf);
  const out: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node) || ts.isTemplateExpression(node)) && !skippedArgument(node)) {
      const text = evaluate(node, known);
      if (text !== null && LOOKS_LIKE_SQL.test(text)) out.push(text);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

/** A text a Parse message can carry: no NUL (it ends the string), valid UTF-8. */
function sendable(text: string): boolean {
  return !text.includes('\0') && text.isWellFormed() && text.trim() !== '';
}

/**
 * The corpus: every SQL literal of CORPUS_SOURCES, then for each that parses
 * as one statement its EXPLAIN, EXPLAIN ANALYZE and PREPARE forms and itself
 * between BEGIN and COMMIT, and each neighbouring pair as one text. Derived
 * texts are kept only when they parse (the literals are kept as they are,
 * parse errors included). Distinct texts only. The SQL parser must be loaded
 * (initParser) first.
 */
export function corpusStatements(): string[] {
  const literals: string[] = [];
  for (const file of CORPUS_SOURCES) literals.push(...sqlLiterals(file));
  const out = new Set<string>();
  for (const text of literals) if (sendable(text)) out.add(text);
  const single = [...out].filter((text) => {
    const parsed = parseStatements(text);
    return parsed.ok && parsed.statements.length === 1;
  });
  const derived: string[] = [];
  single.forEach((text, i) => {
    const body = text.trim().replace(/;\s*$/, '');
    derived.push(`EXPLAIN ${body}`, `EXPLAIN ANALYZE ${body}`, `PREPARE corpus_p${i} AS ${body}`, `BEGIN; ${body}; COMMIT`);
    const next = single[i + 1];
    if (next !== undefined) derived.push(`${body}; ${next}`);
  });
  for (const text of derived) {
    if (out.has(text)) continue;
    const parsed = parseStatements(text);
    if (parsed.ok) out.add(text);
  }
  return [...out];
}
