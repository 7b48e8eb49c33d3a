/**
 * Pins the one TypeScript decoder (control/datapath/layout.ts) to the C
 * header as the compiler laid it out: every struct's size and every field's
 * offset and size must agree, and the enums must match.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative } from '../../native/index.js';
import {
  Action,
  Direction,
  Family,
  LAYOUT_VERSION,
  LPM_DATA_BYTES,
  MALFORMED_REASONS,
  MAX_COMPLEX_RULES,
  RuleFlag,
  STRUCTS,
} from '../../control/datapath/layout.js';

const native = loadNative();

test('every struct in flowgate.h has the layout the TS decoder assumes', () => {
  const c = native.layout();
  assert.deepEqual(Object.keys(c).sort(), Object.keys(STRUCTS).sort(), 'same set of structs');
  for (const [name, ts] of Object.entries(STRUCTS)) {
    const cs = c[name]!;
    assert.equal(ts.size, cs.size, `${name} size`);
    assert.deepEqual(Object.keys(ts.fields).sort(), Object.keys(cs.fields).sort(), `${name} field names`);
    for (const [field, f] of Object.entries(ts.fields)) {
      assert.deepEqual(f, cs.fields[field], `${name}.${field} offset/size`);
    }
  }
});

test('enums and limits match flowgate.h', () => {
  const k = native.constants();
  assert.equal(k.FG_LAYOUT_VERSION, LAYOUT_VERSION);
  assert.equal(k.FG_DIR_INGRESS, Direction.ingress);
  assert.equal(k.FG_DIR_EGRESS, Direction.egress);
  assert.equal(k.FG_FAMILY_IPV4, Family.ipv4);
  assert.equal(k.FG_FAMILY_IPV6, Family.ipv6);
  assert.equal(k.FG_ACTION_NONE, Action.none);
  assert.equal(k.FG_ACTION_DROP, Action.drop);
  assert.equal(k.FG_ACTION_ALLOW, Action.allow);
  assert.equal(k.FG_RULE_PROTO, RuleFlag.proto);
  assert.equal(k.FG_RULE_SPORT, RuleFlag.sport);
  assert.equal(k.FG_RULE_DPORT, RuleFlag.dport);
  assert.equal(k.FG_RULE_SRC, RuleFlag.src);
  assert.equal(k.FG_RULE_DST, RuleFlag.dst);
  assert.equal(k.FG_RULE_IFACE, RuleFlag.iface);
  assert.equal(k.FG_MAX_COMPLEX_RULES, MAX_COMPLEX_RULES);
  assert.equal(k.FG_LPM_DATA_BYTES, LPM_DATA_BYTES);
  assert.equal(k.FG_MAL_REASONS, MALFORMED_REASONS.length);
  MALFORMED_REASONS.forEach((reason, i) => {
    assert.equal(k[`FG_MAL_${reason.toUpperCase()}`], i, `FG_MAL_${reason.toUpperCase()}`);
  });
});
