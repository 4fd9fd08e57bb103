// A trigger-db client in Node.js with stock @grpc/grpc-js and default
// channel options: `new TriggerService("unix:///path", insecure)`.
//
// It loads the repository's .proto at run time (@grpc/proto-loader; nothing
// generated is committed) and, against the running daemon:
//   1. Stats;
//   2. Add: N LINK_UP triggers for a made-up interface (needs a writer:
//      root, or a member of the daemon's writer group);
//   3. Query: those triggers back, newest first;
//   4. Subscribe with resume: after the id before the first one added,
//      read half, cancel the stream, subscribe again resuming after the
//      last id read, and check that every added trigger arrived exactly
//      once, in order.
//
//   node triggerdb_client.mjs [--socket /run/trigger-db/trigger.sock] [--add 6]

import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const socket = opt("--socket", "/run/trigger-db/trigger.sock");
const n = Number(opt("--add", "6"));

const def = protoLoader.loadSync("trigger/v1/trigger.proto", {
  includeDirs: [path.join(here, "..", "..", "proto", "proto")],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { TriggerService } = grpc.loadPackageDefinition(def).trigger.v1;
// Default options: grpc-js sends its own :authority for a unix: target.
const client = new TriggerService(`unix://${socket}`, grpc.credentials.createInsecure());

const call = (method, req) =>
  new Promise((resolve, reject) =>
    client[method](req, (err, res) => (err ? reject(new Error(`${method}: ${err.message}`)) : resolve(res))));

// Reads `count` triggers from a Subscribe after `after`, then cancels it.
const subscribeIds = (after, count, iface) =>
  new Promise((resolve, reject) => {
    const ids = [];
    const stream = client.Subscribe({ filter: { interfaces: [iface] }, resume_after_id: after });
    stream.on("data", (r) => {
      if (r.item !== "trigger") return;
      ids.push(Number(r.trigger.id));
      if (ids.length === count) {
        stream.cancel();
        resolve(ids);
      }
    });
    stream.on("error", (e) => {
      if (e.code === grpc.status.CANCELLED && ids.length === count) return;
      reject(new Error(`Subscribe: ${e.message}`));
    });
  });

const iface = `node${process.pid % 100000}`;
const stats = await call("Stats", {});
console.log(`stats: ${stats.stored_triggers} stored, last id ${stats.last_id}`);

const triggers = Array.from({ length: n }, () => ({
  type: "TRIGGER_TYPE_LINK_UP",
  interface: { name: iface },
  link_state: { admin_up: true, carrier: true, oper_state: "OPER_STATE_UP" },
}));
const added = (await call("Add", { triggers })).ids.map(Number);
console.log(`add: ids [${added.join(", ")}]`);

const q = await call("Query", { filter: { interfaces: [iface] }, page_size: n, order: "ORDER_DESCENDING" });
const queried = q.triggers.map((t) => Number(t.id));
if (queried.join() !== [...added].reverse().join()) throw new Error(`query: ${queried} is not ${added} newest first`);
console.log(`query: ${queried.length} triggers of ${iface}, newest first`);

const before = added[0] - 1;
const half = Math.floor(n / 2);
const first = await subscribeIds(before, half, iface);
console.log(`subscribe: read [${first.join(", ")}], reconnecting after id ${first.at(-1)}`);
const rest = await subscribeIds(first.at(-1), n - half, iface);
console.log(`subscribe (resumed after ${first.at(-1)}): read [${rest.join(", ")}]`);
if ([...first, ...rest].join() !== added.join()) throw new Error(`subscribe: got ${[...first, ...rest]}, added ${added}`);
console.log(`subscribe: all ${n} added triggers once each, in order, no duplicates`);
client.close();
