// A Sparkplug B edge node built on Eclipse Tahu's JavaScript client (npm: sparkplug-client), driven by the
// interop tests: one JSON command per line on stdin, one JSON event per line on stdout.
//
//   node sparkplug_edge.js mqtt://127.0.0.1:PORT GROUP NODE
//
// Commands: {"cmd": "nbirth" | "dbirth" | "ndata" | "ddata" | "ddeath", "device"?: ID, "metrics"?: [...]}
//           {"cmd": "skip", "n": N}   advance seq without publishing (a gap the host must notice)
// Metrics are Tahu's own form: {"name", "alias", "type": "Int32" | "Boolean" | ..., "value"}.
// Events:   {"event": "connected"}, {"event": "done", "cmd": ...}, {"event": "ncmd", "metrics": [...]}
// On an NCMD "Node Control/Rebirth" = true it publishes its last NBIRTH and DBIRTHs again, with the values
// last sent, as an edge node must.
"use strict";

const readline = require("readline");
const sparkplug = require("sparkplug-client");

const [serverUrl, groupId, edgeNode] = process.argv.slice(2);
const client = sparkplug.newClient({
  serverUrl,
  username: "",
  password: "",
  groupId,
  edgeNode,
  clientId: `tahu-edge-${edgeNode}-${process.pid}`,
  publishDeath: true,
  keepalive: 2,
});

const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const births = { node: null, devices: new Map() }; // the metrics of the last births, updated by data

function remember(device, metrics) {
  const birth = device === undefined ? births.node : births.devices.get(device);
  if (!birth) return;
  for (const m of metrics) {
    const known = birth.find((b) => (m.alias !== undefined && b.alias === m.alias) || b.name === m.name);
    if (known) known.value = m.value;
  }
}

const copy = (metrics) => metrics.map((m) => ({ ...m }));

function rebirth() {
  if (births.node) client.publishNodeBirth({ timestamp: Date.now(), metrics: copy(births.node) });
  for (const [device, metrics] of births.devices) {
    client.publishDeviceBirth(device, { timestamp: Date.now(), metrics: copy(metrics) });
  }
}

client.on("connect", () => say({ event: "connected" }));
client.on("error", (error) => say({ event: "error", message: String(error) }));
client.on("ncmd", (payload) => {
  const metrics = (payload.metrics || []).map((m) => ({ name: m.name, type: m.type, value: m.value }));
  say({ event: "ncmd", metrics });
  if (metrics.some((m) => m.name === "Node Control/Rebirth" && m.value === true)) rebirth();
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const c = JSON.parse(line);
  const payload = { timestamp: Date.now(), metrics: copy(c.metrics || []) };
  switch (c.cmd) {
    case "nbirth":
      births.node = copy(c.metrics);
      births.devices.clear();
      client.publishNodeBirth(payload);
      break;
    case "dbirth":
      births.devices.set(c.device, copy(c.metrics));
      client.publishDeviceBirth(c.device, payload);
      break;
    case "ndata":
      remember(undefined, c.metrics);
      client.publishNodeData(payload);
      break;
    case "ddata":
      remember(c.device, c.metrics);
      client.publishDeviceData(c.device, payload);
      break;
    case "ddeath":
      births.devices.delete(c.device);
      client.publishDeviceDeath(c.device, payload);
      break;
    case "skip":
      for (let i = 0; i < (c.n || 1); i++) client.incrementSeqNum();
      break;
    default:
      say({ event: "error", message: `unknown command ${c.cmd}` });
      return;
  }
  say({ event: "done", cmd: c.cmd });
});
