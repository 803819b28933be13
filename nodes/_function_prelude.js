// The JavaScript side of evflow's function node (nodes/function.py, nodes/_sandbox.py): evaluated
// once in each function node's own QuickJS context, before the node's code is compiled.
//
// QuickJS refuses calls from JavaScript into Python while a time limit is set, so nothing here
// calls out. What the node's code does (node.send, node.warn, node.status, context.set…) is
// recorded as effects, in order, and handed back to Python with the outcome of the call, as JSON:
//
//     {"effects": [effect…], "failure": "TypeError: …"}   (failure only when the call failed;
//                                                          "lost": why its effects were dropped)
//
//     ["send", port, msg]          ["log", level, text]        ["status", {fill, shape, text}]
//     ["error", text, msg|null]    ["set", scope, key, value]  (no value: delete the key)
//
// The context stores the code names come in with each call as a snapshot (values as JSON), and
// what the code changes in them, by context.set or by changing an object it got, goes back as
// "set" effects. Functions this prelude defines are named __evflow_…: a stack frame of user code
// is any other.
(function (globalObject) {
    "use strict";

    var AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
    // `new Function(…)` puts the code's first line on the third line of its source.
    var FIRST_LINE = 3;
    var SCOPES = ["context", "flow", "global"];

    var info = {id: "", name: "", outputs: 1, env: null};
    var compiled = {};      // kind ("body", "setup", "cleanup") -> the node's code as a function
    var sources = {};       // kind -> the node's code as written
    var phase = "";         // the kind of code running
    var effects = [];       // what the running call did, in order
    var failure;            // node.done(err): the message failed
    var stores = {};        // scope -> snapshot of that context store (only those the code names)
    var watched = [];       // [scope, key, object, its JSON when got]: objects the code may change
    var pending = null;     // the state of a call whose code returned a promise

    // ---- values and text -----------------------------------------------------------------------

    function __evflow_snapshot(value) {
        // What a message or status is at the moment it is sent: later changes do not reach it.
        return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
    }

    function __evflow_clone(value) {
        // RED.util.cloneMessage: a deep copy of plain objects and arrays (dates stay dates).
        if (value === null || typeof value !== "object") {
            return value;
        }
        if (value instanceof Date) {
            return new Date(value.getTime());
        }
        if (Array.isArray(value)) {
            return value.map(__evflow_clone);
        }
        var copy = {};
        Object.keys(value).forEach(function __evflow_clone_key(key) {
            copy[key] = __evflow_clone(value[key]);
        });
        return copy;
    }

    function __evflow_text(value) {
        // A value as a log line: text as it is, errors as "TypeError: …", anything else as JSON.
        if (typeof value === "string") {
            return value;
        }
        if (value instanceof Error || value === undefined || typeof value === "function") {
            return String(value);
        }
        try {
            var json = JSON.stringify(value);
            return json === undefined ? String(value) : json;
        } catch (error) {
            return String(value);
        }
    }

    function __evflow_failure_text(error) {
        // A thrown value as Node-RED reports it: "TypeError: …"; a ReferenceError with the line
        // and column in the node's code, as Node-RED adds them.
        if (!(error instanceof Error)) {
            return __evflow_text(error);
        }
        var text = String(error);
        if (error instanceof ReferenceError) {
            // Node-RED puts the stack's first line and the position into err.message, and
            // reports err.toString(): the name comes twice.
            var at = __evflow_position(error.stack);
            text = "ReferenceError: " + text + (at ? " (line " + at.line + ", col " + __evflow_v8_column(at) + ")" : "");
        }
        return text;
    }

    function __evflow_v8_column(at) {
        // QuickJS points at the name that is not defined; V8 at the `return` of `return name`.
        var code = (sources[phase] || "").split("\n")[at.line - 1] || "";
        var before = /\breturn\s+$/.exec(code.slice(0, at.col - 1));
        return before ? before.index + 1 : at.col;
    }

    function __evflow_position(stack) {
        // Where in the node's code the innermost frame of a stack is (null: not in its code).
        var frame = /^\s*at (?:([^\s(]+) \()?<input>:(\d+):(\d+)/.exec(String(stack || ""));
        if (!frame || (frame[1] && frame[1].indexOf("__evflow_") === 0)) {
            return null;
        }
        var line = Number(frame[2]) - FIRST_LINE + 1;
        return line >= 1 ? {line: line, col: Number(frame[3])} : null;
    }

    function __evflow_type_name(value) {
        if (Array.isArray(value)) {
            return "Array";
        }
        if (value instanceof Date) {
            return "Date";
        }
        return typeof value;
    }

    // ---- property expressions on context snapshots (as evflow.runtime.properties reads them) --

    // property expression -> its parts, parsed once (forgotten by the thousand: keys can be made up)
    var partsOf = Object.create(null);
    var partsKnown = 0;

    function __evflow_parts(expression) {
        if (typeof expression !== "string" || expression === "") {
            throw new Error("Invalid context key: " + __evflow_text(expression));
        }
        var known = partsOf[expression];
        if (known === undefined) {
            if (++partsKnown > 1000) {
                partsOf = Object.create(null);
                partsKnown = 1;
            }
            known = partsOf[expression] = __evflow_parse(expression);
        }
        return known;
    }

    function __evflow_parse(expression) {
        if (expression.indexOf("msg.") === 0) {
            expression = expression.slice(4);
        }
        var parts = [];
        var rest = expression;
        var match;
        while (rest.length > 0) {
            if ((match = /^\[(\d+)\]/.exec(rest))) {
                parts.push(Number(match[1]));
            } else if ((match = /^\[(["'])(.+?)\1\]/.exec(rest))) {
                parts.push(match[2]);
            } else if ((match = (parts.length ? /^\.([^.[\]\s]+)/ : /^([^.[\]\s]+)/).exec(rest))) {
                parts.push(/^\d+$/.test(match[1]) ? Number(match[1]) : match[1]);
            } else {
                throw new Error("Invalid property expression: " + JSON.stringify(expression));
            }
            rest = rest.slice(match[0].length);
        }
        return parts;
    }

    function __evflow_own(container, key) {
        if (Array.isArray(container) || typeof container === "string") {
            if (typeof key === "number") {
                return container[key];
            }
            return key === "length" ? container.length : undefined;
        }
        if (container !== null && typeof container === "object") {
            return Object.prototype.hasOwnProperty.call(container, key) ? container[key] : undefined;
        }
        return undefined;
    }

    function __evflow_get_within(root, parts) {
        var value = root;
        for (var i = 0; i < parts.length && value !== undefined; i++) {
            value = __evflow_own(value, parts[i]);
        }
        return value;
    }

    function __evflow_set_within(root, parts, value) {
        var container = root;
        for (var i = 0; i < parts.length - 1; i++) {
            var child = __evflow_own(container, parts[i]);
            if (child === undefined) {
                child = typeof parts[i + 1] === "number" ? [] : {};
                container[parts[i]] = child;
            } else if (child === null || typeof child !== "object") {
                return; // nothing can be created beneath a string, number, boolean or null
            }
            container = child;
        }
        var last = parts[parts.length - 1];
        if (Array.isArray(container) && typeof last !== "number") {
            return;
        }
        if (value !== undefined) {
            container[last] = value;
        } else if (Array.isArray(container)) {
            if (last < container.length) {
                container.splice(last, 1);
            }
        } else {
            delete container[last];
        }
    }

    // ---- context, flow and global -------------------------------------------------------------

    function __evflow_store(scope) {
        var snapshot = stores[scope];
        if (snapshot === undefined) {
            throw new Error("the " + scope + " context is not available to this code");
        }
        return snapshot;
    }

    function __evflow_check_store(name) {
        if (name !== undefined && name !== null && name !== "default" && name !== "memory" && name !== "_") {
            __evflow_log("warn", "Unknown context store '" + name + "' specified. Using default.");
        }
    }

    function __evflow_read(scope, key) {
        var value = __evflow_get_within(__evflow_store(scope), __evflow_parts(key));
        if (value !== null && typeof value === "object") {
            // Node-RED's memory store hands out the stored object itself: a change to it is kept.
            watched.push([scope, key, value, JSON.stringify(value)]);
        }
        return value;
    }

    function __evflow_write(scope, key, value) {
        __evflow_set_within(__evflow_store(scope), __evflow_parts(key), value);
        effects.push(value === undefined ? ["set", scope, key] : ["set", scope, key, value]);
    }

    function __evflow_write_back() {
        // The objects the code got from a store and changed in place, as Node-RED would keep them.
        if (watched.length === 0) {
            return;
        }
        watched.forEach(function __evflow_write_back_one(entry) {
            var scope = entry[0], key = entry[1], object = entry[2];
            var current = __evflow_get_within(stores[scope], __evflow_parts(key));
            if (current === object && JSON.stringify(object) !== entry[3]) {
                effects.push(["set", scope, key, object]);
            }
        });
        watched = [];
    }

    function __evflow_context_api(scope) {
        return {
            get: function __evflow_context_get(key, store, callback) {
                if (typeof store === "function") {
                    callback = store;
                    store = undefined;
                }
                __evflow_check_store(store);
                var value = Array.isArray(key)
                    ? key.map(function __evflow_context_get_one(one) { return __evflow_read(scope, one); })
                    : __evflow_read(scope, key);
                if (typeof callback === "function") {
                    callback.apply(undefined, [null].concat(Array.isArray(key) ? value : [value]));
                    return undefined;
                }
                return value;
            },
            set: function __evflow_context_set(key, value, store, callback) {
                if (typeof store === "function") {
                    callback = store;
                    store = undefined;
                }
                __evflow_check_store(store);
                if (Array.isArray(key)) {
                    key.forEach(function __evflow_context_set_one(one, index) {
                        __evflow_write(scope, one, Array.isArray(value) ? value[index] : undefined);
                    });
                } else {
                    __evflow_write(scope, key, value);
                }
                if (typeof callback === "function") {
                    callback(null);
                }
            },
            keys: function __evflow_context_keys(store, callback) {
                if (typeof store === "function") {
                    callback = store;
                    store = undefined;
                }
                __evflow_check_store(store);
                var keys = Object.keys(__evflow_store(scope));
                if (typeof callback === "function") {
                    callback(null, keys);
                    return undefined;
                }
                return keys;
            }
        };
    }

    // ---- what the node's code sees ----------------------------------------------------------

    function __evflow_log(level, value) {
        effects.push(["log", level, __evflow_text(value)]);
    }

    function __evflow_collect(results, snapshot) {
        // Node-RED's sendResults: a message, or an array with one entry per output port, each a
        // message or an array of messages; null and undefined send nothing.
        if (results === null || results === undefined) {
            return;
        }
        if (!Array.isArray(results)) {
            results = [results];
        }
        for (var port = 0; port < results.length; port++) {
            var messages = results[port];
            if (!messages) {
                continue;
            }
            if (!Array.isArray(messages)) {
                messages = [messages];
            }
            for (var i = 0; i < messages.length; i++) {
                var msg = messages[i];
                if (msg === null || msg === undefined) {
                    continue;
                }
                if (typeof msg !== "object" || Array.isArray(msg) || msg instanceof Date) {
                    __evflow_log("error", "Function tried to send a message of type " + __evflow_type_name(msg));
                } else if (port < info.outputs) {
                    effects.push(["send", port, snapshot ? __evflow_snapshot(msg) : msg]);
                }
            }
        }
    }

    function __evflow_no_event_loop(name) {
        return function __evflow_unavailable() {
            throw new Error(name + " is not available in evflow's function node: it runs each message "
                            + "to completion and has no event loop (no timers, no I/O)");
        };
    }

    var node = {
        send: function __evflow_node_send(msgs, clone) {
            if (phase === "body") {
                __evflow_collect(msgs, true);
            } else if (phase === "cleanup") {
                __evflow_log("error", "Cannot send from close function");
            } else {
                __evflow_log("error", "Cannot send from the setup code: evflow starts the flow after it ran");
            }
        },
        done: function __evflow_node_done(error) {
            if (error !== undefined && error !== null && failure === undefined) {
                failure = __evflow_failure_text(error);
            }
        },
        error: function __evflow_node_error(error, msg) {
            if (msg !== null && typeof msg === "object" && !Array.isArray(msg)) {
                effects.push(["error", __evflow_text(error), __evflow_snapshot(msg)]);
            } else {
                __evflow_log("error", error);
            }
        },
        warn: function __evflow_node_warn(value) { __evflow_log("warn", value); },
        log: function __evflow_node_log(value) { __evflow_log("info", value); },
        debug: function __evflow_node_debug(value) { __evflow_log("debug", value); },
        trace: function __evflow_node_trace(value) { __evflow_log("trace", value); },
        status: function __evflow_node_status(status) {
            if (typeof status === "string" || typeof status === "number" || typeof status === "boolean") {
                status = {text: "" + status};
            }
            effects.push(["status", status !== null && typeof status === "object" ? __evflow_snapshot(status) : {}]);
        },
        on: function __evflow_node_on(event) {
            if (event === "input") {
                throw new Error("Cannot add listener to 'input' event within Function");
            }
            throw new Error("node.on('" + event + "') is not supported by evflow's function node: "
                            + "put what must run at the end in the finalize code");
        }
    };

    var context = __evflow_context_api("context");
    var flow = __evflow_context_api("flow");
    var global = __evflow_context_api("global");
    Object.defineProperty(context, "flow", {value: flow});
    Object.defineProperty(context, "global", {value: global});

    var sandbox = {
        context: context,
        flow: flow,
        global: global,
        env: {
            get: function __evflow_env_get(name) {
                var env = info.env || {};
                return Object.prototype.hasOwnProperty.call(env, name) ? env[name] : undefined;
            }
        },
        RED: {
            util: {
                cloneMessage: __evflow_clone,
                generateId: function __evflow_generate_id() {
                    var id = "";
                    for (var i = 0; i < 16; i++) {
                        id += Math.floor(Math.random() * 16).toString(16);
                    }
                    return id;
                }
            }
        },
        console: {
            log: function __evflow_console_log(value) { __evflow_log("info", value); },
            info: function __evflow_console_info(value) { __evflow_log("info", value); },
            warn: function __evflow_console_warn(value) { __evflow_log("warn", value); },
            error: function __evflow_console_error(value) { __evflow_log("error", value); },
            debug: function __evflow_console_debug(value) { __evflow_log("debug", value); }
        },
        setTimeout: __evflow_no_event_loop("setTimeout"),
        setInterval: __evflow_no_event_loop("setInterval"),
        setImmediate: __evflow_no_event_loop("setImmediate"),
        clearTimeout: __evflow_no_event_loop("clearTimeout"),
        clearInterval: __evflow_no_event_loop("clearInterval")
    };
    Object.keys(sandbox).forEach(function __evflow_define_global(name) {
        globalObject[name] = sandbox[name];
    });

    // ---- the calls Python makes ---------------------------------------------------------------

    function __evflow_outcome() {
        var outcome = {effects: effects};
        if (failure !== undefined) {
            outcome.failure = failure;
        }
        return JSON.stringify(outcome);
    }

    function __evflow_finish(results) {
        var before = effects.length;
        try {
            if (phase === "body") {
                __evflow_collect(results, false);
            }
            __evflow_write_back();
            return __evflow_outcome();
        } catch (error) {
            effects.length = before; // what the code returned cannot be sent: it is not JSON
            return __evflow_fail(error);
        }
    }

    function __evflow_fail(error) {
        if (failure === undefined) {
            failure = __evflow_failure_text(error);
        }
        try {
            __evflow_write_back();
            return __evflow_outcome();
        } catch (unserialisable) {
            // An effect holds something JSON cannot carry (a cycle, a BigInt), or there is no
            // memory left to write them: none is carried out.
            effects = [];
            var lost = __evflow_failure_text(unserialisable);
            return JSON.stringify({effects: effects, failure: failure, lost: lost});
        }
    }

    function __evflow_install(infoText) {
        info = JSON.parse(infoText);
        node.id = info.id;
        node.name = info.name;
        node.outputCount = info.outputs;
    }

    function __evflow_compile(kind, source) {
        // The node's code as the body of a function of msg and node; an async function when it
        // awaits (Node-RED always makes one: a function that does not await behaves the same).
        // Returns null, or the syntax error with its line and column in the code.
        try {
            var make = /\bawait\b/.test(source) ? AsyncFunction : Function;
            compiled[kind] = make("msg", "node", source);
            sources[kind] = source;
            return null;
        } catch (error) {
            var at = /<input>:(\d+):(\d+)/.exec(String(error.stack || ""));
            var line = at ? Number(at[1]) - FIRST_LINE + 1 : 0;
            // (past the code's last line: the code closed the function it is put in, say)
            var inCode = line >= 1 && line <= source.split("\n").length;
            return String(error) + (inCode ? " (line " + line + ", col " + at[2] + ")" : "");
        }
    }

    function __evflow_call(kind, requestText) {
        // Runs one kind of code: the outcome as JSON, or null when the code returned a promise
        // (Python then runs the pending jobs and calls __evflow_settle).
        var request = JSON.parse(requestText);
        effects = [];
        failure = undefined;
        watched = [];
        pending = null;
        stores = request.stores || {};
        phase = kind;
        var msg = request.msg;
        var result;
        try {
            result = compiled[kind](msg, node);
        } catch (error) {
            return __evflow_fail(error);
        }
        if (result !== null && typeof result === "object" && typeof result.then === "function") {
            // A promise of a call that a limit stopped may settle during a later call: ignored.
            var state = pending = {settled: false, outcome: null};
            result.then(function __evflow_fulfilled(value) {
                if (state === pending) {
                    state.outcome = __evflow_finish(value);
                    state.settled = true;
                }
            }, function __evflow_rejected(error) {
                if (state === pending) {
                    state.outcome = __evflow_fail(error);
                    state.settled = true;
                }
            });
            return null;
        }
        return __evflow_finish(result);
    }

    function __evflow_settle() {
        if (pending === null || !pending.settled) {
            pending = null;
            throw new Error("the function's promise never settled: evflow's function node has no event "
                            + "loop, so nothing it could wait for (timers, I/O) ever happens");
        }
        var outcome = pending.outcome;
        pending = null;
        return outcome;
    }

    [__evflow_install, __evflow_compile, __evflow_call, __evflow_settle].forEach(function __evflow_export(fn) {
        Object.defineProperty(globalObject, fn.name, {value: fn});
    });
    // The code may keep its own things on context (Node-RED's `context.data = {}` idiom lives as
    // long as the node), but cannot replace the get/set/keys that carry its values to Python.
    SCOPES.forEach(function __evflow_fix_scope_api(scope) {
        Object.keys(sandbox[scope]).forEach(function __evflow_fix_method(name) {
            Object.defineProperty(sandbox[scope], name, {writable: false, configurable: false});
        });
    });
})(globalThis);
