/**
 * What the agent benchmarks share: a kernel flow map filled from synthetic
 * records, and the agent's own Collector draining it into a spool.
 */
import { Collector } from '../control/agent/collector.js';
import { MonotonicClock } from '../control/agent/clock.js';
import type { Spool } from '../control/agent/spool.js';
import { flowMapName, type Datapath } from '../control/datapath/datapath.js';
import { FLOW_KEY, FLOW_RECORD_SIZE } from '../control/datapath/layout.js';
import type { Logger } from '../control/log.js';

/** Split packed records into key and value arrays for a batch update. */
export function splitRecords(records: Buffer): { keys: Buffer; values: Buffer } {
  const n = records.length / FLOW_RECORD_SIZE;
  const valueSize = FLOW_RECORD_SIZE - FLOW_KEY.size;
  const keys = Buffer.alloc(n * FLOW_KEY.size);
  const values = Buffer.alloc(n * valueSize);
  for (let i = 0; i < n; i++) {
    records.copy(keys, i * FLOW_KEY.size, i * FLOW_RECORD_SIZE, i * FLOW_RECORD_SIZE + FLOW_KEY.size);
    records.copy(values, i * valueSize, i * FLOW_RECORD_SIZE + FLOW_KEY.size, (i + 1) * FLOW_RECORD_SIZE);
  }
  return { keys, values };
}

/** Writes the records into the active flow map, as the programs would have (refill before each drain). */
export function activeMapFiller(dp: Datapath, records: Buffer): () => Promise<void> {
  const { keys, values } = splitRecords(records);
  return () => dp.native.updateBatch(flowMapName(dp.config().flowSlot), keys, values);
}

/** The agent's Collector over `dp`, spooling to `spool`, host "bench", no interface names. */
export function benchCollector(dp: Datapath, spool: Spool, log: Logger): Collector {
  return new Collector({
    dp,
    spool,
    clock: new MonotonicClock(),
    host: 'bench',
    ifaceNames: () => ({}),
    log,
    onDrain: () => undefined,
  });
}
