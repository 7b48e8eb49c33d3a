/** The upfront read-only check (the engine's readonly=1 is tested in store.test.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { guardReadOnlySql } from '../../control/store/sql-guard.js';
import { StoreError } from '../../control/store/types.js';

function refused(sql: string, why: RegExp): void {
  assert.throws(
    () => guardReadOnlySql(sql),
    (e: unknown) => e instanceof StoreError && !e.retryable && why.test(e.message),
    sql,
  );
}

describe('guardReadOnlySql', () => {
  it('passes read-only statements, without a trailing semicolon', () => {
    assert.equal(guardReadOnlySql('  SELECT 1;  '), 'SELECT 1');
    assert.equal(guardReadOnlySql('select 1 ;;'), 'select 1');
    assert.equal(guardReadOnlySql('SELECT 1; -- done'), 'SELECT 1');
    for (const sql of [
      'WITH x AS (SELECT 1) SELECT * FROM x',
      '(SELECT 1) UNION ALL (SELECT 2)',
      'SHOW TABLES',
      'DESCRIBE TABLE flows',
      'desc flows',
      'EXPLAIN SELECT 1',
      'EXISTS TABLE flows',
      "SELECT 'INSERT INTO x; DROP TABLE y', \"file\" FROM flows -- file('/etc/passwd')",
      "SELECT profile FROM t /* INTO OUTFILE 'x' */",
      'SELECT outfile, into FROM t',
    ]) {
      assert.equal(guardReadOnlySql(sql), sql.trim());
    }
  });

  it('refuses writes, DDL and administration by their first word', () => {
    for (const sql of [
      'INSERT INTO flows VALUES (1)',
      'ALTER TABLE flows DELETE WHERE 1',
      'DROP TABLE flows',
      'CREATE TABLE t (a UInt8) ENGINE = Memory',
      'SYSTEM FLUSH LOGS',
      'KILL QUERY WHERE 1',
      'OPTIMIZE TABLE flows FINAL',
      'TRUNCATE TABLE flows',
      'RENAME TABLE flows TO f2',
      'GRANT ALL ON *.* TO default',
      'SET readonly = 0',
      'USE system',
      "BACKUP TABLE flows TO File('/tmp/x')",
      '-- comment\n  DELETE FROM flows WHERE 1',
    ]) {
      refused(sql, /only read-only queries/);
    }
    refused('   ', /empty/);
  });

  it('refuses several statements', () => {
    refused('SELECT 1; DROP TABLE flows', /one statement/);
    refused("SELECT 1; SELECT ';'", /one statement/);
  });

  it('refuses what reads or writes files on the agent host', () => {
    refused("SELECT 1 INTO OUTFILE '/tmp/x'", /INTO OUTFILE/);
    refused("SELECT 1 into\n outfile '/tmp/x'", /INTO OUTFILE/);
    refused("SELECT file('/etc/shadow')", /file\(\)/);
    refused("SELECT `file`('/etc/shadow')", /file\(\)/);
    refused("SELECT * FROM file('/etc/shadow', 'LineAsString')", /file\(\)/);
    refused("SELECT catboostEvaluate('/x.bin', 1)", /catboostEvaluate\(\)/);
  });
});
