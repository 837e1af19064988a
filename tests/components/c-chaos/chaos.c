// Test fixture: the C version of tests/components/chaos, a "chaos" v1 handler
// that misbehaves on request. The body is {"action": "...", ...}; actions:
// - "ok": return ok.
// - "reject" / "retry": return that error ("asked to reject"/"asked to retry").
// - "panic": trap (unreachable).
// - "loop": spin forever (for the time limit).
// - "alloc": allocate and fill 1 MiB blocks forever (for the memory limit).
// - "produce-bad-json": produce "{not json" to "chaos-out" and reject with
//   "produce failed: <host error>".
// - anything else: reject "unknown action".
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

// Finds the string value of the first "action" member of a JSON object: a
// plain text scan, good enough for a test fixture. The value is returned raw
// (escapes are not decoded). Returns false if there is none.
static bool find_action(const string_t *body, string_t *action) {
    static const char key[] = "\"action\"";
    const size_t key_len = sizeof key - 1;
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

static bool is(const string_t *action, const char *name) {
    return action->len == strlen(name) && memcmp(action->ptr, name, action->len) == 0;
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
