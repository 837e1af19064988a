// Test fixture: the C version of tests/components/chaos, a "chaos" v1 handler
// that misbehaves on request. The body is {"action": "...", ...}; actions:
// - "ok": return ok.
// - "reject" / "retry": return that error ("asked to reject"/"asked to retry").
// - "panic": trap (unreachable).
// - "loop": spin forever (for the time limit).
// - "alloc": allocate and fill 1 MiB blocks forever (for the memory limit).
// - "produce-bad-json": produce "{not json" to "chaos-out" and reject with
//   "produce failed: <host error>".
// - "store-add": read field "key" as a decimal counter (0 when missing), add
//   one, store it; "store-get": reject "got VALUE" or "got nothing";
//   "store-delete": delete it; "store-scan": reject "keys K1,K2,..." for the
//   keys under prefix "key" (the store through the raw bindings).
// - anything else: reject "unknown action".
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logpipe_handler.h"

typedef logpipe_handler_string_t string_t;
typedef exports_logpipe_handler_handler_envelope_t envelope_t;
typedef exports_logpipe_handler_handler_handle_error_t handle_error_t;

#define BLOCK_SIZE (1 << 20)

// Every block "alloc" allocates, chained through their first word, so none
// of them is garbage as far as the compiler can tell.
static void *volatile blocks;

void exports_logpipe_handler_handler_message_type(string_t *ret) {
    logpipe_handler_string_dup(ret, "chaos");
}

uint32_t exports_logpipe_handler_handler_version(void) { return 1; }

// Sets `err` to `tag` with a copy of `text` (the bindings free it after the call).
static bool fail(handle_error_t *err, uint8_t tag, const char *text) {
    err->tag = tag;
    logpipe_handler_string_dup(&err->val.reject, text); // reject and retry share the slot
    return false;
}

static bool reject(handle_error_t *err, const char *text) {
    return fail(err, EXPORTS_LOGPIPE_HANDLER_HANDLER_HANDLE_ERROR_REJECT, text);
}

// Rejects with `prefix` followed by `detail`; frees `detail`.
static bool reject_with(handle_error_t *err, const char *prefix, string_t *detail) {
    size_t prefix_len = strlen(prefix);
    size_t len = prefix_len + detail->len;
    uint8_t *text = malloc(len);
    if (text == NULL) __builtin_trap();
    memcpy(text, prefix, prefix_len);
    memcpy(text + prefix_len, detail->ptr, detail->len);
    logpipe_handler_string_free(detail);
    err->tag = EXPORTS_LOGPIPE_HANDLER_HANDLER_HANDLE_ERROR_REJECT;
    err->val.reject = (string_t){text, len};
    return false;
}

static bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Finds the string value of the first member `key` (quoted, e.g.
// "\"action\"") of a JSON object: a plain text scan, good enough for a test
// fixture. The value is returned raw (escapes are not decoded) and points
// into `body`. Returns false if there is none.
static bool find_string(const string_t *body, const char *key, string_t *action) {
    const size_t key_len = strlen(key);
    const uint8_t *s = body->ptr;
    size_t n = body->len;
    for (size_t i = 0; i + key_len <= n; i++) {
        if (memcmp(s + i, key, key_len) != 0) continue;
        size_t j = i + key_len;
        while (j < n && is_space(s[j])) j++;
        if (j >= n || s[j] != ':') continue; // "action" was a value, not a key
        j++;
        while (j < n && is_space(s[j])) j++;
        if (j >= n || s[j] != '"') return false; // not a string
        size_t start = ++j;
        while (j < n && s[j] != '"') j += s[j] == '\\' ? 2 : 1;
        if (j >= n) return false;
        *action = (string_t){(uint8_t *)s + start, j - start};
        return true;
    }
    return false;
}

static bool find_action(const string_t *body, string_t *action) {
    return find_string(body, "\"action\"", action);
}

static bool is(const string_t *action, const char *name) {
    return action->len == strlen(name) && memcmp(action->ptr, name, action->len) == 0;
}

// A copy of `bytes` as a string the bindings may free.
static string_t copy(const uint8_t *bytes, size_t len) {
    uint8_t *ptr = malloc(len ? len : 1);
    if (ptr == NULL) __builtin_trap();
    memcpy(ptr, bytes, len);
    return (string_t){ptr, len};
}

// The store actions; `key` points into the body.
static bool store_action(const string_t *action, string_t *key, handle_error_t *err, bool *handled) {
    *handled = true;
    logpipe_handler_list_u8_t value;
    if (is(action, "store-add")) {
        unsigned long long n = 0;
        if (logpipe_handler_store_get(key, &value)) {
            for (size_t i = 0; i < value.len; i++) n = n * 10 + (value.ptr[i] - '0');
            logpipe_handler_list_u8_free(&value);
        }
        char text[24];
        int len = snprintf(text, sizeof text, "%llu", n + 1);
        logpipe_handler_list_u8_t next = {(uint8_t *)text, (size_t)len};
        logpipe_handler_store_put(key, &next);
        return true;
    }
    if (is(action, "store-get")) {
        if (!logpipe_handler_store_get(key, &value)) return reject(err, "got nothing");
        string_t detail = copy(value.ptr, value.len);
        logpipe_handler_list_u8_free(&value);
        return reject_with(err, "got ", &detail);
    }
    if (is(action, "store-delete")) {
        logpipe_handler_store_delete(key);
        return true;
    }
    if (is(action, "store-scan")) {
        logpipe_handler_list_tuple2_string_list_u8_t pairs;
        logpipe_handler_store_scan(key, NULL, 1000, &pairs);
        size_t len = 0;
        for (size_t i = 0; i < pairs.len; i++) len += pairs.ptr[i].f0.len + 1;
        uint8_t *text = malloc(len ? len : 1);
        if (text == NULL) __builtin_trap();
        size_t at = 0;
        for (size_t i = 0; i < pairs.len; i++) {
            if (i > 0) text[at++] = ',';
            memcpy(text + at, pairs.ptr[i].f0.ptr, pairs.ptr[i].f0.len);
            at += pairs.ptr[i].f0.len;
        }
        logpipe_handler_list_tuple2_string_list_u8_free(&pairs);
        string_t detail = {text, at};
        return reject_with(err, "keys ", &detail);
    }
    *handled = false;
    return false;
}

static bool run(envelope_t *msg, handle_error_t *err) {
    string_t action;
    if (!find_action(&msg->body, &action))
        return reject(err, "bad chaos command: no \"action\" string");
    if (is(&action, "ok")) return true;
    if (is(&action, "reject")) return reject(err, "asked to reject");
    if (is(&action, "retry"))
        return fail(err, EXPORTS_LOGPIPE_HANDLER_HANDLER_HANDLE_ERROR_RETRY, "asked to retry");
    if (is(&action, "panic")) __builtin_trap();
    if (is(&action, "loop")) {
        // A volatile counter: the loop has an effect, so it is not removed.
        volatile unsigned long spins = 0;
        for (;;) spins++;
    }
    if (is(&action, "alloc")) {
        for (;;) {
            void **block = malloc(BLOCK_SIZE);
            if (block == NULL) __builtin_trap();
            memset(block, 0xA5, BLOCK_SIZE); // non-zero, so the pages are really written
            *block = blocks;
            blocks = block;
        }
    }
    if (is(&action, "produce-bad-json")) {
        string_t topic, type, body, host_error;
        logpipe_handler_string_set(&topic, "chaos-out");
        logpipe_handler_string_set(&type, "chaos");
        logpipe_handler_string_set(&body, "{not json");
        string_t *key = msg->key.is_some ? &msg->key.val : NULL;
        if (logpipe_handler_host_produce(&topic, &type, 1, key, &body, &host_error))
            return reject(err, "produce failed: host accepted bad JSON");
        return reject_with(err, "produce failed: ", &host_error);
    }
    string_t key = {(uint8_t *)"", 0};
    find_string(&msg->body, "\"key\"", &key);
    bool handled;
    bool ok = store_action(&action, &key, err, &handled);
    if (handled) return ok;
    return reject(err, "unknown action");
}

bool exports_logpipe_handler_handler_handle(envelope_t *msg, handle_error_t *err) {
    bool ok = run(msg, err);
    // wit-bindgen 0.63's envelope_free skips the option<string> fields: free
    // those first (harmless once it does not).
    logpipe_handler_option_string_free(&msg->key);
    logpipe_handler_option_string_free(&msg->producer);
    exports_logpipe_handler_handler_envelope_free(msg);
    return ok;
}
