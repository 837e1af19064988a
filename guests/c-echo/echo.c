// Echo handler: re-sends every "echo" v1 body, byte for byte, to "echo-out".
// Bindings: `wit-bindgen c wit --world logpipe-handler` (see scripts/guests/c.sh).
#include "logpipe_handler.h"

typedef logpipe_handler_string_t string_t;

void exports_logpipe_handler_handler_message_type(string_t *ret) {
    logpipe_handler_string_dup(ret, "echo"); // a copy: the bindings free it
}

uint32_t exports_logpipe_handler_handler_version(void) { return 1; }

bool exports_logpipe_handler_handler_handle(exports_logpipe_handler_handler_envelope_t *msg,
                                            exports_logpipe_handler_handler_handle_error_t *err) {
    string_t topic, type, host_error;
    logpipe_handler_string_set(&topic, "echo-out");
    logpipe_handler_string_set(&type, "echo");
    string_t *key = msg->key.is_some ? &msg->key.val : NULL;
    bool ok = logpipe_handler_host_produce(&topic, &type, 1, key, &msg->body, &host_error);
    if (!ok) { // host_error is ours; the bindings free it after returning it as the reason
        err->tag = EXPORTS_LOGPIPE_HANDLER_HANDLER_HANDLE_ERROR_RETRY;
        err->val.retry = host_error;
    }
    // msg is ours to free. wit-bindgen 0.63's envelope_free skips the
    // option<string> fields, so free those first (harmless once it does not).
    logpipe_handler_option_string_free(&msg->key);
    logpipe_handler_option_string_free(&msg->producer);
    exports_logpipe_handler_handler_envelope_free(msg);
    return ok;
}
