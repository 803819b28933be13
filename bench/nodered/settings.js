// Node-RED for the bench: headless (no editor, no HTTP server at all), quiet, nothing phoned home.
// The bench starts it as `node red.js --settings settings.js --userDir DIR flows.json`.
module.exports = {
    flowFile: "flows.json",
    credentialSecret: false,
    httpAdminRoot: false,
    httpNodeRoot: false,
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    externalModules: { autoInstall: false },
    logging: { console: { level: "warn", metrics: false, audit: false } },
    functionExternalModules: false,
    exportGlobalContextKeys: false,
};
