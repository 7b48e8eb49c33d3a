/**
 * Child process for the kill -9 test: the agent's part of the datapath
 * lifecycle. Opens (or adopts) the datapath pinned at <bpffs>, attaches
 * <iface> with XDP in <mode> plus TC egress, prints one JSON line, then
 * waits to be killed. argv: <bpffs> <iface> <mode>.
 */
import { Datapath } from '../../../control/datapath/datapath.js';
import type { XdpMode } from '../../../native/index.js';

const [bpffs, iface, mode] = process.argv.slice(2) as [string, string, XdpMode];
const dp = Datapath.open({ bpffs, maxFlows: 4096, maxRules: 4096, maxPrefixes: 4096 });
const attached = dp.attach(iface, { xdpMode: mode, egress: true });
process.stdout.write(`${JSON.stringify({ adopted: dp.adopted, attached })}\n`);
setInterval(() => undefined, 1 << 30);
