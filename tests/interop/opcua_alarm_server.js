// An OPC UA server built on node-opcua raising and clearing real alarms (AlarmConditionType instances with
// node-opcua's own Part 9 state machine: branches, retain, ConditionRefresh), for the alarm interop test.
//
//   node opcua_alarm_server.js PORT PKI_DIR NAME...
//
// Namespace urn:mw-gateway:interop-alarms holds the object Oven1 (an event source of the Server object) and
// one AlarmConditionType instance per NAME under it. Commands on stdin, one per line, each answered with
// "done <command>" on stdout once its event is raised:
//   raise NAME SEVERITY MESSAGE...   activate (unacknowledged, retained) with this severity and message
//   clear NAME                       deactivate, acknowledged, no longer retained
//   clear-unacked NAME               deactivate, still waiting for an acknowledgement (retained: a branch)
// Prints "listening PORT" once it serves.
"use strict";
const path = require("path");
const readline = require("readline");
const {
  OPCUAServer,
  OPCUACertificateManager,
  SecurityPolicy,
  MessageSecurityMode,
  DataType,
  StatusCodes,
} = require("node-opcua");

async function main() {
  const [portText, pki, ...names] = process.argv.slice(2);
  const port = parseInt(portText, 10);
  const certificateManager = new OPCUACertificateManager({
    rootFolder: path.join(pki, "server"),
    automaticallyAcceptUnknownCertificate: true,
  });
  await certificateManager.initialize();
  const server = new OPCUAServer({
    port,
    hostname: "127.0.0.1",
    resourcePath: "/",
    serverCertificateManager: certificateManager,
    securityPolicies: [SecurityPolicy.None],
    securityModes: [MessageSecurityMode.None],
    allowAnonymous: true,
    buildInfo: { productName: "mw-gateway interop alarm server" },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  addressSpace.installAlarmsAndConditionsService();
  const ns = addressSpace.registerNamespace("urn:mw-gateway:interop-alarms");
  const oven = ns.addObject({
    organizedBy: addressSpace.rootFolder.objects,
    browseName: "Oven1",
    nodeId: "s=Oven1",
    eventNotifier: 1,
    eventSourceOf: addressSpace.rootFolder.objects.server,
  });
  const alarms = {};
  for (const name of names) {
    const input = ns.addVariable({
      componentOf: oven,
      browseName: `${name}Input`,
      nodeId: `s=Oven1.${name}Input`,
      dataType: DataType.Boolean,
      value: { dataType: DataType.Boolean, value: false },
    });
    const alarm = ns.instantiateAlarmCondition("AlarmConditionType", {
      componentOf: oven,
      conditionSource: oven,
      browseName: name,
      nodeId: `s=Oven1.${name}`,
      conditionName: name,
      inputNode: input,
    });
    alarm.setEnabledState(true);
    alarms[name] = alarm;
  }
  await server.start();
  console.log(`listening ${port}`);

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [command, name, ...rest] = line.trim().split(" ");
    const alarm = alarms[name];
    if (!alarm) {
      console.log(`error unknown alarm ${name}`);
      continue;
    }
    if (command === "raise") {
      const severity = parseInt(rest[0], 10);
      alarm.activateAlarm();
      alarm.raiseNewCondition({ message: rest.slice(1).join(" "), severity, quality: StatusCodes.Good, retain: true });
    } else if (command === "clear" || command === "clear-unacked") {
      const acked = command === "clear";
      if (acked) {
        alarm.currentBranch().setAckedState(true);
      }
      alarm.deactivateAlarm(!acked);
      alarm.raiseNewCondition({
        message: `${name} back to normal`,
        severity: alarm.currentBranch().getSeverity(),
        quality: StatusCodes.Good,
        retain: !acked,
      });
    } else {
      console.log(`error unknown command ${command}`);
      continue;
    }
    console.log(`done ${line.trim()}`);
  }
  await server.shutdown(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
