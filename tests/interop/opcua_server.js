// An OPC UA server built on node-opcua (an implementation independent of asyncua, our client library),
// for the interop tests.
//
//   node opcua_server.js PORT PKI_DIR [--secure] [--extra-namespace] [--late]
//
// Namespace urn:mw-gateway:interop holds the object Press with
//   Counter (Int32, +1 every 100 ms), Constant (Double 42.5, never changes), Text (String "hello"),
//   Flag (Boolean true), and with --late also Late (Int32 7): a node that appears after a restart.
// NodeIds are strings: ns=<index>;s=Press.Counter. --extra-namespace registers urn:mw-gateway:other first,
// so the interop namespace gets another index (a PLC whose namespaces were reordered by a download).
// --secure: only Basic256Sha256 SignAndEncrypt, and unknown client certificates are rejected (node-opcua
// moves them to PKI_DIR/own... /rejected). Prints "listening PORT" once it serves.
"use strict";
const path = require("path");
const {
  OPCUAServer,
  OPCUACertificateManager,
  Variant,
  DataType,
  SecurityPolicy,
  MessageSecurityMode,
} = require("node-opcua");

async function main() {
  const args = process.argv.slice(2);
  const port = parseInt(args[0], 10);
  const pki = args[1];
  const secure = args.includes("--secure");
  const certificateManager = new OPCUACertificateManager({
    rootFolder: path.join(pki, "server"),
    automaticallyAcceptUnknownCertificate: !secure,
  });
  await certificateManager.initialize();
  const userCertificateManager = new OPCUACertificateManager({
    rootFolder: path.join(pki, "user"),
    automaticallyAcceptUnknownCertificate: !secure,
  });
  await userCertificateManager.initialize();
  const server = new OPCUAServer({
    port,
    hostname: "127.0.0.1",
    resourcePath: "/",
    serverCertificateManager: certificateManager,
    userCertificateManager,
    securityPolicies: secure ? [SecurityPolicy.Basic256Sha256] : [SecurityPolicy.None],
    securityModes: secure ? [MessageSecurityMode.SignAndEncrypt] : [MessageSecurityMode.None],
    allowAnonymous: true,
    buildInfo: { productName: "mw-gateway interop server" },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  if (args.includes("--extra-namespace")) {
    addressSpace.registerNamespace("urn:mw-gateway:other");
  }
  const ns = addressSpace.registerNamespace("urn:mw-gateway:interop");
  const press = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Press" });
  let counter = 0;
  setInterval(() => { counter += 1; }, 100);
  ns.addVariable({
    componentOf: press,
    browseName: "Counter",
    nodeId: "s=Press.Counter",
    dataType: "Int32",
    minimumSamplingInterval: 50,
    value: { get: () => new Variant({ dataType: DataType.Int32, value: counter }) },
  });
  const fixed = (name, dataType, value) =>
    ns.addVariable({
      componentOf: press,
      browseName: name,
      nodeId: `s=Press.${name}`,
      dataType: DataType[dataType] !== undefined ? dataType : "Double",
      value: new Variant({ dataType: DataType[dataType], value }),
    });
  fixed("Constant", "Double", 42.5);
  fixed("Text", "String", "hello");
  fixed("Flag", "Boolean", true);
  if (args.includes("--late")) fixed("Late", "Int32", 7);
  await server.start();
  console.log(`listening ${port} namespace ${ns.index}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
