// The statements every micro benchmark measures: five OLTP statements and one ~5 KB statement.

export function bigStatement(targetBytes: number): string {
  const columns: string[] = [];
  for (let i = 0; columns.join(', ').length < targetBytes * 0.55; i++) {
    columns.push(`CASE WHEN o.status_${i} = 'open' THEN coalesce(o.amount_${i}, 0) * 1.${i % 10} ELSE lower(c.note_${i}) END AS col_${i}`);
  }
  const predicates: string[] = [];
  for (let i = 0; predicates.join(' AND ').length < targetBytes * 0.3; i++) {
    predicates.push(`(o.region_${i} IN ('north', 'south', 'east') OR c.flag_${i} IS NOT NULL)`);
  }
  return (
    `WITH recent AS (SELECT customer_id, max(created_at) AS last_seen FROM app.orders GROUP BY customer_id)\n` +
    `SELECT ${columns.join(', ')}\n` +
    `FROM app.orders o JOIN app.customers c ON c.id = o.customer_id\n` +
    `LEFT JOIN recent r ON r.customer_id = c.id\n` +
    `WHERE ${predicates.join(' AND ')}\n` +
    `ORDER BY o.created_at DESC LIMIT 100`
  );
}

export const STATEMENTS: ReadonlyArray<readonly [string, string]> = [
  ['pgbench select', 'SELECT abalance FROM pgbench_accounts WHERE aid = 48213;'],
  ['pgbench update', 'UPDATE pgbench_accounts SET abalance = abalance + -4062 WHERE aid = 48213;'],
  [
    'pgbench insert',
    'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 48213, -4062, CURRENT_TIMESTAMP);',
  ],
  [
    '3-table join',
    'SELECT o.id, o.total, c.name, p.title FROM orders o JOIN customers c ON c.id = o.customer_id ' +
      'JOIN products p ON p.id = o.product_id WHERE o.created_at > now() - interval \'1 day\' AND c.region = $1 ' +
      'ORDER BY o.created_at DESC LIMIT 50',
  ],
  [
    'update returning',
    "UPDATE orders SET status = 'shipped', shipped_at = now() WHERE id = $1 AND status = 'paid' RETURNING id, status, shipped_at",
  ],
  ['~5 KB select', bigStatement(5 * 1024)],
];

