/**
 * Child process for the atomic-replace test: adopts the parent's pinned
 * datapath and sends one frame per test-run, each a new flow (new source
 * port) so every run evaluates the rule tables, until told to stop.
 * argv: <bpffs dir>. Prints the number of runs on stdout when stdin closes.
 */
import { Datapath } from '../../../control/datapath/datapath.js';
import { buildFrame } from '../../lib/frames.js';

const dp = Datapath.open({ bpffs: process.argv[2]!, maxFlows: 4096, maxRules: 4096, maxPrefixes: 4096 });
if (!dp.adopted) throw new Error('hammer expected to adopt the parent datapath');
let stop = false;
process.stdin.on('close', () => (stop = true)).resume();
process.stdin.on('end', () => (stop = true));
let runs = 0;
const tick = (): void => {
  for (let i = 0; i < 200; i++) {
    const frame = buildFrame({
      ipv4: { src: '10.0.0.1', dst: '192.0.2.1' },
      tcp: { sport: 1024 + (runs % 60000), dport: 80, flags: ['SYN'] },
    });
    dp.testRun('xdp', frame);
    runs++;
  }
  if (stop) {
    process.stdout.write(`${runs}\n`);
    dp.close();
    return;
  }
  setImmediate(tick);
};
process.stdout.write('ready\n');
tick();
