/** Compile and load rule specs into a test datapath in one call. */
import type { Datapath } from '../../control/datapath/datapath.js';
import { compileRules, encodeRuleTables } from '../../control/rules/compile.js';
import { parseRule, type RuleSpec } from '../../control/rules/rule.js';
import { loadNative } from '../../native/index.js';

/** Rules get ids 1..n in order unless the spec names one. */
export async function loadRuleSpecs(dp: Datapath, specs: RuleSpec[]): Promise<number> {
  const rules = specs.map((s, i) => parseRule(s, s.id ?? i + 1));
  const tables = encodeRuleTables(compileRules(rules, (name) => loadNative().ifindex(name)));
  return dp.loadRules(tables);
}
