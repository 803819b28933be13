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
//     ["timer", id, ms]            ["interval", id, ms]        ["clear", id]
//
// ("error" with null: a failure with no message, that of a timer's callback.) The context stores
// the code names come in with each call as a snapshot (values as JSON), and what the code changes
// in them, by context.set or by changing an object it got, goes back as "set" effects.
//
// Timers: the callbacks stay here, by id; Python keeps the deadlines and, when one is due, calls
// __evflow_fire(id). Values cross as JSON both ways: bytes as a Buffer's JSON form
// ({"type": "Buffer", "data": [...]}), made a Buffer here; NaN and ±Infinity, which JSON has no
// form for, as marked strings ("\uffffnumber:NaN"), made numbers again on the other side.
//
// Two parts: this one, evaluated when the node's sandbox is made, and Buffer (at the end of the
// file, from "==== evflow: Buffer"), which Python evaluates only for code that names it or gets
// bytes. Functions this prelude defines are named __evflow_… (but Buffer's methods): a stack frame
// of user code is any other.
(function (globalObject) {
    "use strict";

    var AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
    // `new Function(…)` puts the code's first line on the third line of its source.
    var FIRST_LINE = 3;
    var SCOPES = ["context", "flow", "global"];
    // The most timers a node may have set at once: each holds its callback here and a deadline in Python.
    var MAX_TIMERS = 10000;
    // Node.js's longest timer (ms): a longer one, as one of less than 1 ms or not a number, fires after 1 ms.
    var TIMEOUT_MAX = 2147483647;
    // How NaN and ±Infinity cross as JSON (see above), before the number's String(): U+FFFF is a
    // noncharacter, Unicode's own for such internal use, which JSON writes as it is and Python finds
    // at once (in a text that has no other character past U+00FF, without reading it).
    var NUMBER_MARK = "\uffffnumber:";

    var info = {id: "", name: "", outputs: 1, env: null};
    var compiled = {};      // kind ("body", "setup", "cleanup") -> the node's code as a function
    var sources = {};       // kind -> the node's code as written
    var phase = "";         // the kind of code running
    var effects = [];       // what the running call did, in order
    var failure;            // node.done(err): the message failed
    var stores = {};        // scope -> snapshot of that context store (only those the code names)
    var watched = [];       // [scope, key, object, its JSON when got]: objects the code may change
    var pending = null;     // the state of a call whose code returned a promise
    var lastOutcome = null; // the outcome the last call returned, as an object
    var timers = new Map(); // id -> {fn, args, repeat}: the timers set and not yet done or cleared
    var lastTimerId = 0;
    var timerJournal = [];  // [id, the timer before (undefined: none)] of each change the running call made

    // ---- values and text -----------------------------------------------------------------------

    function __evflow_snapshot(value) {
        // What a message or status is at the moment it is sent: later changes do not reach it
        // (NaN and ±Infinity as marked strings, which the outcome's JSON carries to Python as they are).
        return value === undefined ? undefined : JSON.parse(JSON.stringify(value, __evflow_mark_number));
    }

    function __evflow_mark_number(key, value) {
        // JSON.stringify's replacer for Python: NaN and ±Infinity, which JSON would write as null,
        // as marked strings.
        return typeof value === "number" && !isFinite(value) ? NUMBER_MARK + value : value;
    }

    function __evflow_revive(key, value) {
        // JSON.parse's reviver for a request whose text Python saw a Buffer's JSON form or a marked
        // number in: Buffers (as Python's from_json makes them bytes), NaN and ±Infinity.
        if (typeof value === "string") {
            if (value.indexOf(NUMBER_MARK) === 0) {
                var number = value.slice(NUMBER_MARK.length);
                if (number === "NaN" || number === "Infinity" || number === "-Infinity") {
                    return Number(number);
                }
            }
            return value;
        }
        if (value !== null && typeof value === "object" && value.type === "Buffer" && Array.isArray(value.data)
            && Object.keys(value).length === 2 && value.data.every(__evflow_is_byte)) {
            return BufferClass.from(value.data); // (Python made it before, seeing the form)
        }
        return value;
    }

    function __evflow_is_byte(value) {
        return Number.isInteger(value) && value >= 0 && value <= 255;
    }

    function __evflow_clone(value) {
        // RED.util.cloneMessage: a deep copy of plain objects and arrays (dates stay dates).
        if (value === null || typeof value !== "object") {
            return value;
        }
        if (value instanceof Date) {
            return new Date(value.getTime());
        }
        if (__evflow_is_buffer(value)) {
            return BufferClass.from(value);
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
        if (typeof value === "number") {
            return String(value); // NaN and Infinity too, which JSON would write as null
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
        if (__evflow_is_buffer(value)) {
            return "Buffer";
        }
        if (Array.isArray(value)) {
            return "Array";
        }
        if (value instanceof Date) {
            return "Date";
        }
        return typeof value;
    }

    // ---- Node.js's errors ---------------------------------------------------------------------

    function __evflow_nodejs_error(Type, code, message) {
        // An error as Node.js makes one: its text names its code ("TypeError [ERR_…]: …").
        var error = new Type(message);
        error.code = code;
        Object.defineProperty(error, "toString", {
            value: function __evflow_node_error_text() { return error.name + " [" + code + "]: " + error.message; }
        });
        return error;
    }

    function __evflow_invalid_argument(message, value) {
        // Node.js's TypeError for an argument of the wrong type, saying what it got.
        return __evflow_nodejs_error(TypeError, "ERR_INVALID_ARG_TYPE", message + __evflow_received(value));
    }

    function __evflow_received(value) {
        // How Node.js describes a wrong argument: " Received type number (1)", " Received undefined".
        if (value === null || value === undefined) {
            return " Received " + value;
        }
        if (typeof value === "function") {
            return " Received function " + (value.name || "<anonymous>");
        }
        if (typeof value === "object") {
            var name = value.constructor && value.constructor.name;
            return name ? " Received an instance of " + name : " Received " + __evflow_text(value);
        }
        var shown = typeof value === "string" ? "'" + value + "'" : String(value);
        return " Received type " + typeof value + " (" + shown + ")";
    }

    // ---- Buffer: Node.js's bytes, as much of them as function code commonly uses ------------------

    // Buffer is the second part of this file, which Python evaluates only for code that names it or
    // gets bytes (most code does neither, and it costs each node about 1 ms and 80 KiB); then it
    // hands its Buffer to __evflow_install_buffer.
    var BufferClass = null;

    function __evflow_is_buffer(value) {
        return BufferClass !== null && value instanceof BufferClass;
    }

    function __evflow_install_buffer(makeBuffer) {
        BufferClass = makeBuffer({nodejsError: __evflow_nodejs_error, invalidArgument: __evflow_invalid_argument,
                                  received: __evflow_received});
        globalObject.Buffer = BufferClass;
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
                if (typeof msg !== "object" || Array.isArray(msg) || msg instanceof Date || __evflow_is_buffer(msg)) {
                    __evflow_log("error", "Function tried to send a message of type " + __evflow_type_name(msg));
                } else if (port < info.outputs) {
                    var sent = snapshot ? __evflow_snapshot(msg) : msg;
                    effects.push(["send", port, sent]);
                }
            }
        }
    }

    // ---- timers -------------------------------------------------------------------------------

    function __evflow_set_timer(repeat, fn, delay, args) {
        // Node-RED's setTimeout and setInterval: the callback stays here, Python keeps the deadline.
        if (typeof fn !== "function") {
            throw __evflow_invalid_argument('The "callback" argument must be of type function.', fn);
        }
        if (timers.size >= MAX_TIMERS) {
            throw new Error("too many timers: a function node may have " + MAX_TIMERS + " set at once "
                            + "(clear those it no longer needs with clearTimeout or clearInterval)");
        }
        var ms = delay * 1; // as Node.js reads it: a string of digits is a number, anything else 1 ms
        if (!(ms >= 1 && ms <= TIMEOUT_MAX)) {
            ms = 1;
        }
        var id = ++lastTimerId;
        timers.set(id, {fn: fn, args: args, repeat: repeat});
        timerJournal.push([id, undefined]);
        effects.push([repeat ? "interval" : "timer", id, ms]);
        return id;
    }

    function __evflow_clear_timer(id) {
        // clearTimeout and clearInterval clear either kind, as in Node.js, which also takes the id as text.
        var key = typeof id === "string" ? Number(id) : id;
        var timer = timers.get(key);
        if (timer !== undefined) {
            timers.delete(key);
            timerJournal.push([key, timer]);
            effects.push(["clear", key]);
        }
    }

    function __evflow_undo_timers() {
        // The running call's effects are not carried out: the timers it set or cleared are as before.
        for (var i = timerJournal.length - 1; i >= 0; i--) {
            var id = timerJournal[i][0], before = timerJournal[i][1];
            if (before === undefined) {
                timers.delete(id);
            } else {
                timers.set(id, before);
            }
        }
        timerJournal = [];
    }

    function __evflow_callback_failed(error) {
        // Node-RED's timer wrapper: node.error(err, {}), a failure with no message of its own.
        effects.push(["error", __evflow_failure_text(error), null]);
    }

    var node = {
        send: function __evflow_node_send(msgs, clone) {
            if (phase === "body" || phase === "timer") {
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
        setTimeout: function __evflow_set_timeout(fn, delay) {
            return __evflow_set_timer(false, fn, delay, Array.prototype.slice.call(arguments, 2));
        },
        setInterval: function __evflow_set_interval(fn, delay) {
            return __evflow_set_timer(true, fn, delay, Array.prototype.slice.call(arguments, 2));
        },
        clearTimeout: __evflow_clear_timer,
        clearInterval: __evflow_clear_timer
    };
    Object.keys(sandbox).forEach(function __evflow_define_global(name) {
        globalObject[name] = sandbox[name];
    });

    // ---- the calls Python makes ---------------------------------------------------------------

    function __evflow_outcome() {
        var outcome = lastOutcome = {effects: effects};
        if (failure !== undefined) {
            outcome.failure = failure;
        }
        return JSON.stringify(outcome);
    }

    function __evflow_marked_outcome() {
        // The outcome written again with NaN and ±Infinity marked: Python asks for it when the text
        // has a null, which may have been one of them (a scan for it here costs as much as this).
        return JSON.stringify(lastOutcome, __evflow_mark_number);
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
            __evflow_undo_timers();
            lastOutcome = {effects: effects, failure: failure, lost: __evflow_failure_text(unserialisable)};
            return JSON.stringify(lastOutcome);
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

    function __evflow_begin(kind, requestText, revive) {
        var request = revive ? JSON.parse(requestText, __evflow_revive) : JSON.parse(requestText);
        effects = [];
        failure = undefined;
        watched = [];
        pending = null;
        timerJournal = [];
        stores = request.stores || {};
        phase = kind;
        return request;
    }

    function __evflow_call(kind, requestText, revive) {
        // Runs one kind of code: the outcome as JSON, or null when the code returned a promise
        // (Python then runs the pending jobs and calls __evflow_settle). `revive`: the request holds
        // a Buffer's JSON form or a marked number.
        var msg = __evflow_begin(kind, requestText, revive).msg;
        var result;
        try {
            result = compiled[kind](msg, node);
        } catch (error) {
            return __evflow_fail(error);
        }
        if (result !== null && typeof result === "object" && typeof result.then === "function") {
            // A promise of a call that a limit stopped may settle during a later call: ignored. One
            // that waits for a timer settles in the call that fires it (it is "detached" then).
            var state = pending = {settled: false, detached: false, outcome: null};
            result.then(function __evflow_fulfilled(value) {
                if (state.detached) {
                    __evflow_late_results(value);
                } else if (state === pending) {
                    state.outcome = __evflow_finish(value);
                    state.settled = true;
                }
            }, function __evflow_rejected(error) {
                if (state.detached) {
                    __evflow_late_failure(error);
                } else if (state === pending) {
                    state.outcome = __evflow_fail(error);
                    state.settled = true;
                }
            });
            return null;
        }
        return __evflow_finish(result);
    }

    function __evflow_late_results(results) {
        // What a message's code returned after it waited for a timer: sent in the running call.
        var before = effects.length;
        try {
            __evflow_collect(results, true);
        } catch (error) {
            effects.length = before; // it is not JSON
            __evflow_late_failure(error);
        }
    }

    function __evflow_late_failure(error) {
        if (failure === undefined) {
            failure = __evflow_failure_text(error);
        }
    }

    function __evflow_fire(id, requestText, revive) {
        // Runs the callback of a timer that is due; null, always: Python then runs the jobs it
        // queued (a promise it settled, such as that of a message's code waiting for it) and calls
        // __evflow_settle.
        __evflow_begin("timer", requestText, revive);
        var timer = timers.get(id);
        if (timer === undefined) {
            return null;
        }
        if (!timer.repeat) {
            timers.delete(id); // (not undone if a limit stops the call: Python forgot it too)
        }
        try {
            var result = timer.fn.apply(node, timer.args);
            if (result !== null && typeof result === "object" && typeof result.then === "function") {
                result.then(undefined, __evflow_callback_failed);
            }
        } catch (error) {
            __evflow_callback_failed(error);
        }
        return null;
    }

    function __evflow_settle() {
        // The outcome of the running call once its pending jobs ran.
        var state = pending;
        pending = null;
        if (state === null) {
            return __evflow_finish(undefined); // a timer's callback
        }
        if (state.settled) {
            return state.outcome;
        }
        if (timers.size === 0) {
            throw new Error("the function's promise never settled, and no timer is set that could settle it: "
                            + "evflow's function node has no I/O, only timers");
        }
        // Waiting for a timer: what it returns when it settles is sent then, as in Node-RED.
        state.detached = true;
        return __evflow_finish(undefined);
    }

    function __evflow_abandon() {
        // A limit stopped the running call, whose effects Python does not carry out.
        __evflow_undo_timers();
        pending = null;
    }

    [__evflow_install, __evflow_install_buffer, __evflow_compile, __evflow_call, __evflow_fire, __evflow_settle,
     __evflow_marked_outcome, __evflow_abandon].forEach(function __evflow_export(fn) {
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

// ==== evflow: Buffer ====
// The second part (see __evflow_install_buffer): Node.js's Buffer, as much of it as function code
// commonly uses, compared with Node.js 20's own. Python evaluates it in the node's context, once,
// before the first call that needs it.
__evflow_install_buffer(function __evflow_make_buffer(internals) {
    "use strict";

    var __evflow_nodejs_error = internals.nodejsError;
    var __evflow_invalid_argument = internals.invalidArgument;
    var __evflow_received = internals.received;

    // Encoding names as Node.js takes them (in any case) -> the encoding.
    var ENCODINGS = {
        "utf8": "utf8", "utf-8": "utf8", "hex": "hex", "base64": "base64", "base64url": "base64url",
        "latin1": "latin1", "binary": "latin1", "ascii": "ascii",
        "ucs2": "utf16le", "ucs-2": "utf16le", "utf16le": "utf16le", "utf-16le": "utf16le"
    };
    var BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    var BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // base64 character code -> its 6 bits; Node.js reads both alphabets in either encoding
    var BASE64_VALUES = new Int8Array(128).fill(-1);
    for (var b64 = 0; b64 < 64; b64++) {
        BASE64_VALUES[BASE64.charCodeAt(b64)] = b64;
        BASE64_VALUES[BASE64URL.charCodeAt(b64)] = b64;
    }

    function __evflow_encoding(name, lenient) {
        // The encoding named; Buffer.from and byteLength take anything but a name as UTF-8, as Node.js.
        if (name === undefined || (lenient && (typeof name !== "string" || name === ""))) {
            return "utf8";
        }
        var encoding = ENCODINGS[String(name).toLowerCase()];
        if (encoding === undefined) {
            throw __evflow_nodejs_error(TypeError, "ERR_UNKNOWN_ENCODING", "Unknown encoding: " + name);
        }
        return encoding;
    }

    function __evflow_encode(text, encoding) {
        // A string's bytes, as a Uint8Array.
        var bytes, i, n = 0;
        if (encoding === "utf8") {
            bytes = new Uint8Array(text.length * 3);
            for (i = 0; i < text.length; i++) {
                var code = text.charCodeAt(i);
                if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
                    var low = text.charCodeAt(i + 1);
                    if (low >= 0xdc00 && low <= 0xdfff) {
                        code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                        i++;
                    }
                }
                if (code >= 0xd800 && code <= 0xdfff) {
                    code = 0xfffd; // a lone surrogate, as Node.js writes it
                }
                if (code < 0x80) {
                    bytes[n++] = code;
                } else if (code < 0x800) {
                    bytes[n++] = 0xc0 | code >> 6;
                    bytes[n++] = 0x80 | code & 0x3f;
                } else if (code < 0x10000) {
                    bytes[n++] = 0xe0 | code >> 12;
                    bytes[n++] = 0x80 | code >> 6 & 0x3f;
                    bytes[n++] = 0x80 | code & 0x3f;
                } else {
                    bytes[n++] = 0xf0 | code >> 18;
                    bytes[n++] = 0x80 | code >> 12 & 0x3f;
                    bytes[n++] = 0x80 | code >> 6 & 0x3f;
                    bytes[n++] = 0x80 | code & 0x3f;
                }
            }
            return bytes.subarray(0, n);
        }
        if (encoding === "hex") {
            // Node.js stops at the first pair that is not hexadecimal (and drops an odd last digit).
            bytes = new Uint8Array(text.length >> 1);
            for (i = 0; i + 1 < text.length; i += 2) {
                var pair = text.slice(i, i + 2);
                if (!/^[0-9a-fA-F]{2}$/.test(pair)) {
                    break;
                }
                bytes[n++] = parseInt(pair, 16);
            }
            return bytes.subarray(0, n);
        }
        if (encoding === "base64" || encoding === "base64url") {
            // As Node.js: either alphabet, characters of neither skipped, the first "=" ends the data.
            bytes = new Uint8Array((text.length * 3 >> 2) + 3);
            var bits = 0, count = 0;
            for (i = 0; i < text.length; i++) {
                var c = text.charCodeAt(i);
                if (c === 61) {
                    break;
                }
                var value = c < 128 ? BASE64_VALUES[c] : -1;
                if (value < 0) {
                    continue;
                }
                bits = (bits << 6 | value) & 0xffffff;
                count += 6;
                if (count >= 8) {
                    count -= 8;
                    bytes[n++] = bits >> count & 0xff;
                }
            }
            return bytes.subarray(0, n);
        }
        if (encoding === "utf16le") {
            bytes = new Uint8Array(text.length * 2);
            for (i = 0; i < text.length; i++) {
                bytes[n++] = text.charCodeAt(i) & 0xff;
                bytes[n++] = text.charCodeAt(i) >> 8;
            }
            return bytes;
        }
        // latin1, binary and ascii: the low byte of each character
        bytes = new Uint8Array(text.length);
        for (i = 0; i < text.length; i++) {
            bytes[i] = text.charCodeAt(i);
        }
        return bytes;
    }

    function __evflow_decode(bytes, encoding, start, end) {
        // bytes[start, end) as a string.
        var i, text = "";
        if (encoding === "utf8") {
            return __evflow_utf8_text(bytes, start, end);
        }
        if (encoding === "hex") {
            for (i = start; i < end; i++) {
                text += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
            }
            return text;
        }
        if (encoding === "base64" || encoding === "base64url") {
            var alphabet = encoding === "base64" ? BASE64 : BASE64URL;
            for (i = start; i + 2 < end; i += 3) {
                var triple = bytes[i] << 16 | bytes[i + 1] << 8 | bytes[i + 2];
                text += alphabet[triple >> 18] + alphabet[triple >> 12 & 63] + alphabet[triple >> 6 & 63]
                        + alphabet[triple & 63];
            }
            if (end - i === 1) {
                text += alphabet[bytes[i] >> 2] + alphabet[(bytes[i] & 3) << 4]
                        + (encoding === "base64" ? "==" : "");
            } else if (end - i === 2) {
                var pair = bytes[i] << 8 | bytes[i + 1];
                text += alphabet[pair >> 10] + alphabet[pair >> 4 & 63] + alphabet[(pair & 15) << 2]
                        + (encoding === "base64" ? "=" : "");
            }
            return text;
        }
        var codes = [];
        if (encoding === "utf16le") {
            for (i = start; i + 1 < end; i += 2) {
                codes.push(bytes[i] | bytes[i + 1] << 8);
            }
        } else {
            var mask = encoding === "ascii" ? 0x7f : 0xff;
            for (i = start; i < end; i++) {
                codes.push(bytes[i] & mask);
            }
        }
        return __evflow_chars(codes);
    }

    function __evflow_chars(codes) {
        // String.fromCharCode of many codes, in slices (an argument list has a limit).
        var text = "";
        for (var i = 0; i < codes.length; i += 8192) {
            text += String.fromCharCode.apply(null, codes.slice(i, i + 8192));
        }
        return text;
    }

    function __evflow_utf8_text(bytes, start, end) {
        // UTF-8 as Node.js decodes it: each ill-formed sequence (its longest valid start) as U+FFFD.
        var codes = [];
        var i = start;
        while (i < end) {
            var first = bytes[i++];
            if (first < 0x80) {
                codes.push(first);
                continue;
            }
            var code, needed, lower = 0x80, upper = 0xbf;
            if (first >= 0xc2 && first <= 0xdf) {
                needed = 1;
                code = first & 0x1f;
            } else if (first >= 0xe0 && first <= 0xef) {
                needed = 2;
                code = first & 0x0f;
                lower = first === 0xe0 ? 0xa0 : 0x80;
                upper = first === 0xed ? 0x9f : 0xbf;
            } else if (first >= 0xf0 && first <= 0xf4) {
                needed = 3;
                code = first & 0x07;
                lower = first === 0xf0 ? 0x90 : 0x80;
                upper = first === 0xf4 ? 0x8f : 0xbf;
            } else {
                codes.push(0xfffd);
                continue;
            }
            for (; needed > 0; needed--) {
                if (i >= end || bytes[i] < lower || bytes[i] > upper) {
                    code = 0xfffd;
                    break;
                }
                code = code << 6 | bytes[i++] & 0x3f;
                lower = 0x80;
                upper = 0xbf;
            }
            if (code >= 0x10000) {
                code -= 0x10000;
                codes.push(0xd800 + (code >> 10), 0xdc00 + (code & 0x3ff));
            } else {
                codes.push(code);
            }
        }
        return __evflow_chars(codes);
    }

    function __evflow_index(value, length, fallback) {
        // A start or end argument as Node.js reads it: a whole number within [0, length].
        value = value === undefined ? fallback : Math.trunc(Number(value)) || 0;
        return Math.min(Math.max(value, 0), length);
    }

    function __evflow_check_offset(buffer, offset, size) {
        if (offset === undefined) {
            offset = 0;
        }
        if (typeof offset !== "number") {
            throw __evflow_invalid_argument('The "offset" argument must be of type number.', offset);
        }
        if (!Number.isInteger(offset) || offset < 0 || offset + size > buffer.length) {
            if (buffer.length - size < 0) {
                throw __evflow_nodejs_error(RangeError, "ERR_BUFFER_OUT_OF_BOUNDS",
                                            "Attempt to access memory outside buffer bounds");
            }
            var range = Number.isInteger(offset) ? "It must be >= 0 and <= " + (buffer.length - size)
                                                 : "It must be an integer";
            throw __evflow_nodejs_error(RangeError, "ERR_OUT_OF_RANGE", 'The value of "offset" is out of range. '
                                        + range + ". Received " + offset);
        }
        return offset;
    }

    function __evflow_view(buffer) {
        return new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    }

    class Buffer extends Uint8Array {
        static from(value, encodingOrOffset, length) {
            if (typeof value === "string") {
                var bytes = __evflow_encode(value, __evflow_encoding(encodingOrOffset, true));
                var made = new Buffer(bytes.length);
                made.set(bytes);
                return made;
            }
            if (value instanceof ArrayBuffer) {
                // a view of the same memory, as in Node.js
                var offset = encodingOrOffset === undefined ? 0 : Math.trunc(Number(encodingOrOffset)) || 0;
                return new Buffer(value, offset, length === undefined ? value.byteLength - offset : length);
            }
            if (value !== null && typeof value === "object") {
                if (ArrayBuffer.isView(value) || typeof value.length === "number") {
                    return __evflow_buffer_of(value);
                }
                if (value.type === "Buffer" && Array.isArray(value.data)) {
                    return __evflow_buffer_of(value.data);
                }
            }
            throw __evflow_invalid_argument("The first argument must be of type string or an instance of Buffer, "
                                            + "ArrayBuffer, or Array or an Array-like Object.", value);
        }

        static alloc(size, fill, encoding) {
            if (typeof size !== "number") {
                throw __evflow_invalid_argument('The "size" argument must be of type number.', size);
            }
            if (!(size >= 0 && size <= 0x7fffffff)) { // (QuickJS's largest typed array; Node.js's is 2 ** 32)
                throw __evflow_nodejs_error(RangeError, "ERR_OUT_OF_RANGE", 'The value of "size" is out of range. '
                                            + "It must be >= 0 && <= 2147483647. Received " + size);
            }
            var made = new Buffer(Math.trunc(size));
            if (fill !== undefined && fill !== 0 && made.length > 0) {
                made.fill(fill, 0, made.length, encoding);
            }
            return made;
        }

        static allocUnsafe(size) {
            return Buffer.alloc(size);
        }

        static isBuffer(value) {
            return value instanceof Buffer;
        }

        static isEncoding(name) {
            return typeof name === "string" && Object.prototype.hasOwnProperty.call(ENCODINGS, name.toLowerCase());
        }

        static byteLength(value, encoding) {
            if (typeof value === "string") {
                // (an encoding Node.js does not know counts as UTF-8 here)
                var known = typeof encoding === "string" && ENCODINGS[encoding.toLowerCase()];
                return __evflow_encode(value, known || "utf8").length;
            }
            if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
                return value.byteLength;
            }
            throw __evflow_invalid_argument('The "string" argument must be of type string or an instance of '
                                            + "Buffer or ArrayBuffer.", value);
        }

        static concat(list, totalLength) {
            if (!Array.isArray(list)) {
                throw __evflow_invalid_argument('The "list" argument must be an instance of Array.', list);
            }
            var length = 0;
            list.forEach(function __evflow_concat_check(item, index) {
                if (!(item instanceof Uint8Array)) {
                    throw __evflow_invalid_argument('The "list[' + index + ']" argument must be an instance of '
                                                    + "Buffer or Uint8Array.", item);
                }
                length += item.length;
            });
            var made = new Buffer(totalLength === undefined ? length : Math.max(Math.trunc(totalLength) || 0, 0));
            var at = 0;
            for (var i = 0; i < list.length && at < made.length; i++) {
                var part = list[i].subarray(0, made.length - at);
                made.set(part, at);
                at += part.length;
            }
            return made;
        }

        static compare(a, b) {
            if (!(a instanceof Uint8Array) || !(b instanceof Uint8Array)) {
                throw __evflow_nodejs_error(TypeError, "ERR_INVALID_ARG_TYPE", 'The "buf1" and "buf2" arguments '
                                            + "must be instances of Buffer or Uint8Array.");
            }
            var length = Math.min(a.length, b.length);
            for (var i = 0; i < length; i++) {
                if (a[i] !== b[i]) {
                    return a[i] < b[i] ? -1 : 1;
                }
            }
            return a.length === b.length ? 0 : (a.length < b.length ? -1 : 1);
        }

        toString(encoding, start, end) {
            start = __evflow_index(start, this.length, 0);
            end = __evflow_index(end, this.length, this.length);
            return end <= start ? "" : __evflow_decode(this, __evflow_encoding(encoding, false), start, end);
        }

        toJSON() {
            return {type: "Buffer", data: Array.prototype.slice.call(this)};
        }

        equals(other) {
            if (!(other instanceof Uint8Array)) {
                throw __evflow_invalid_argument('The "otherBuffer" argument must be an instance of Buffer or '
                                                + "Uint8Array.", other);
            }
            return Buffer.compare(this, other) === 0;
        }

        compare(other) {
            return Buffer.compare(this, other);
        }

        slice(start, end) {
            // as in Node.js, the same memory (Uint8Array's slice copies)
            return this.subarray(start, end);
        }

        fill(value, offset, end, encoding) {
            if (typeof offset === "string") {
                encoding = offset;
                offset = undefined;
                end = undefined;
            } else if (typeof end === "string") {
                encoding = end;
                end = undefined;
            }
            offset = __evflow_index(offset, this.length, 0);
            end = __evflow_index(end, this.length, this.length);
            if (typeof value === "number" || typeof value === "boolean") {
                return super.fill(Number(value) & 255, offset, end);
            }
            var pattern = typeof value === "string" ? __evflow_encode(value, __evflow_encoding(encoding, true))
                : value instanceof Uint8Array ? value : null;
            if (pattern === null) {
                return super.fill(0, offset, end);
            }
            if (pattern.length === 0) {
                return super.fill(0, offset, end);
            }
            for (var i = offset; i < end; i++) {
                this[i] = pattern[(i - offset) % pattern.length];
            }
            return this;
        }

        copy(target, targetStart, sourceStart, sourceEnd) {
            targetStart = __evflow_index(targetStart, target.length, 0);
            sourceStart = __evflow_index(sourceStart, this.length, 0);
            sourceEnd = __evflow_index(sourceEnd, this.length, this.length);
            var count = Math.max(Math.min(sourceEnd - sourceStart, target.length - targetStart), 0);
            var part = this.subarray(sourceStart, sourceStart + count);
            target.set(part, targetStart);
            return part.length;
        }

        indexOf(value, byteOffset, encoding) {
            if (typeof value === "number") {
                return super.indexOf(value & 255, byteOffset);
            }
            var needle = typeof value === "string"
                ? __evflow_encode(value, __evflow_encoding(encoding, true)) : value;
            var from = byteOffset === undefined ? 0 : Math.trunc(Number(byteOffset)) || 0;
            if (from < 0) {
                from = Math.max(this.length + from, 0);
            }
            search: for (var i = from; i + needle.length <= this.length; i++) {
                for (var j = 0; j < needle.length; j++) {
                    if (this[i + j] !== needle[j]) {
                        continue search;
                    }
                }
                return i;
            }
            return -1;
        }

        includes(value, byteOffset, encoding) {
            return this.indexOf(value, byteOffset, encoding) !== -1;
        }

        write(text, offset, length, encoding) {
            if (typeof offset === "string") {
                encoding = offset;
                offset = undefined;
            } else if (typeof length === "string") {
                encoding = length;
                length = undefined;
            }
            offset = __evflow_index(offset, this.length, 0);
            length = __evflow_index(length, this.length - offset, this.length - offset);
            var kind = __evflow_encoding(encoding, true);
            var bytes = __evflow_encode(String(text), kind);
            var count = Math.min(bytes.length, length);
            if (kind === "utf8" && count < bytes.length) {
                while (count > 0 && (bytes[count] & 0xc0) === 0x80) {
                    count--; // as Node.js, no character is written in part
                }
            }
            this.set(bytes.subarray(0, count), offset);
            return count;
        }
    }

    function __evflow_buffer_of(items) {
        // A new Buffer of an array, typed array or array-like: each item as a byte (modulo 256).
        var made = new Buffer(items.length >>> 0);
        if (ArrayBuffer.isView(items)) {
            made.set(items);
        } else {
            for (var i = 0; i < made.length; i++) {
                made[i] = items[i];
            }
        }
        return made;
    }

    // readUInt16BE, writeInt32LE, readDoubleBE… : Node.js's name -> [DataView's type, bytes, little-endian]
    [["Int8", "Int8", 1], ["UInt8", "Uint8", 1], ["Int16", "Int16", 2], ["UInt16", "Uint16", 2],
     ["Int32", "Int32", 4], ["UInt32", "Uint32", 4], ["Float", "Float32", 4], ["Double", "Float64", 8],
     ["BigInt64", "BigInt64", 8], ["BigUInt64", "BigUint64", 8]].forEach(function __evflow_define_access(kind) {
        var name = kind[0], type = kind[1], size = kind[2];
        var endings = size === 1 ? [["", false]] : [["LE", true], ["BE", false]];
        var integer = /Int/.test(name) && name.indexOf("Big") !== 0;
        var bits = size * 8;
        var lowest = type.indexOf("Uint") === 0 ? 0 : -Math.pow(2, bits - 1);
        var highest = type.indexOf("Uint") === 0 ? Math.pow(2, bits) - 1 : Math.pow(2, bits - 1) - 1;
        endings.forEach(function __evflow_define_ending(ending) {
            var suffix = name + ending[0], littleEndian = ending[1];
            var read = function (offset) {
                offset = __evflow_check_offset(this, offset, size);
                return __evflow_view(this)["get" + type](offset, littleEndian);
            };
            var write = function (value, offset) {
                offset = __evflow_check_offset(this, offset, size);
                if (integer && !(value >= lowest && value <= highest)) {
                    var range = "It must be >= " + lowest + " and <= " + highest + ". Received " + value;
                    throw __evflow_nodejs_error(RangeError, "ERR_OUT_OF_RANGE",
                                                'The value of "value" is out of range. ' + range);
                }
                __evflow_view(this)["set" + type](offset, integer ? Number(value) : value, littleEndian);
                return offset + size;
            };
            [suffix, suffix.replace("UInt", "Uint")].forEach(function __evflow_define_name(methodName) {
                // (as a class's methods are: not enumerable)
                Object.defineProperty(Buffer.prototype, "read" + methodName, {value: read, writable: true});
                Object.defineProperty(Buffer.prototype, "write" + methodName, {value: write, writable: true});
            });
        });
    });

    return Buffer;
});
