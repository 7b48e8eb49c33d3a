/**
 * Whole-batch access to a spool for tests: the agent only ever writes a
 * batch chunk by chunk (SpoolWriter) and reads it slice by slice
 * (BatchReader), never holding one whole.
 */
import type { BatchInfo, BatchMeta, DroppedBatch, Spool } from '../../control/agent/spool.js';
import { FLOW_RECORD_SIZE } from '../../control/datapath/layout.js';

export interface SpooledBatch {
  token: string;
  flows: number;
  meta: BatchMeta;
  /** Packed key||value records (control/datapath/layout.ts). */
  records: Buffer;
}

/** A batch as one Buffer of records, read through the spool's own reader. */
export function readBatch(spool: Spool, info: BatchInfo): SpooledBatch {
  const reader = spool.open(info);
  try {
    const parts: Buffer[] = [];
    for (const slice of reader.slices(Buffer.alloc(64 * 1024))) parts.push(Buffer.from(slice));
    return { token: reader.token, flows: reader.flows, meta: reader.meta, records: Buffer.concat(parts) };
  } finally {
    reader.close();
  }
}

/** Write a whole batch durably (one append, any record size). Returns the batches dropped to stay under the bound. */
export function writeBatch(spool: Spool, batch: SpooledBatch): DroppedBatch[] {
  const w = spool.writer(batch.token, () => batch.meta, 1);
  try {
    w.append(batch.records, batch.flows);
    return w.commit();
  } finally {
    w.abort();
  }
}

/**
 * Spool `flows` all-zero records under `token`: for tests of the shipping
 * itself (order, grouping, timing), where what the records say is not looked at.
 */
export function writeZeroBatch(spool: Spool, token: string, flows: number, meta: BatchMeta): DroppedBatch[] {
  return writeBatch(spool, { token, flows, meta, records: Buffer.alloc(flows * FLOW_RECORD_SIZE) });
}
