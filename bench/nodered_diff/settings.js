// Node-RED for the differential harness: headless (no editor, no HTTP server at all), nothing phoned
// home, the flows file given on the command line. Context and functionGlobalContext are Node-RED's
// defaults (memory context, an empty global context); the log shows warnings and errors, which the
// harness reads to check that a case runs cleanly in Node-RED.
// Started as `node red.js --settings settings.js --userDir DIR flows.json`.
module.exports = {
    credentialSecret: false,
    httpAdminRoot: false,
    httpNodeRoot: false,
    functionGlobalContext: {},
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    externalModules: { autoInstall: false },
    logging: { console: { level: "warn", metrics: false, audit: false } },
    functionExternalModules: false,
    exportGlobalContextKeys: false,
};
