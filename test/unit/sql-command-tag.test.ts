// Command tags for node types and the deterministic fallback for unknown ones.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { commandTag, tagFromNodeName } from '../../src/sql/command-tag.ts';
import { truncateIdentifier } from '../../src/sql/identifiers.ts';

test('unknown node types get a tag derived from the node name', () => {
  assert.equal(tagFromNodeName('CreatePublicationStmt'), 'CREATE PUBLICATION');
  assert.equal(tagFromNodeName('AlterTSDictionaryStmt'), 'ALTER TS DICTIONARY');
  assert.equal(tagFromNodeName('WaitStmt'), 'WAIT');
  assert.equal(tagFromNodeName('Stmt'), 'UNKNOWN');
  assert.equal(commandTag('FutureThingStmt', {}), 'FUTURE THING');
});

test('object-typed statements use the object words, with a fallback for new object types', () => {
  assert.equal(commandTag('DropStmt', { removeType: 'OBJECT_MATVIEW' }), 'DROP MATERIALIZED VIEW');
  assert.equal(commandTag('DropStmt', { removeType: 'OBJECT_FOREIGN_SERVER' }), 'DROP SERVER');
  assert.equal(commandTag('DropStmt', { removeType: 'OBJECT_NEW_KIND' }), 'DROP NEW KIND');
  assert.equal(commandTag('RenameStmt', { renameType: 'OBJECT_COLUMN', relationType: 'OBJECT_VIEW' }), 'ALTER VIEW');
  assert.equal(commandTag('AlterOwnerStmt', { objectType: 'OBJECT_TSCONFIGURATION' }), 'ALTER TEXT SEARCH CONFIGURATION');
  assert.equal(commandTag('DropStmt', {}), 'DROP OBJECT');
});

test('truncateIdentifier: 63 bytes, whole characters', () => {
  assert.equal(truncateIdentifier('short'), 'short');
  assert.equal(truncateIdentifier('a'.repeat(63)), 'a'.repeat(63));
  assert.equal(truncateIdentifier('a'.repeat(64)), 'a'.repeat(63));
  assert.equal(truncateIdentifier('a' + 'é'.repeat(40)), 'a' + 'é'.repeat(31));
  assert.equal(truncateIdentifier('é'.repeat(40)), 'é'.repeat(31));
  assert.equal(truncateIdentifier('ab' + '🎉'.repeat(20)), 'ab' + '🎉'.repeat(15));
  assert.equal(Buffer.byteLength(truncateIdentifier('日'.repeat(30))), 63);
});
