#ifndef C_MARTLET_NATS_H
#define C_MARTLET_NATS_H

// Debian's libnats (libnats-dev), the NATS and JetStream client behind `cluster:`.
// The shim keeps the option and configuration structures on the C side: Swift hands it
// strings and gets back a node handle, messages and acknowledgements through callbacks.
#include <stdint.h>
#include <stddef.h>
#include <nats/nats.h>

typedef struct mn_node mn_node;
typedef struct mn_watch mn_watch;

/// A message arrived on one of the node's subscriptions. The callee owns `msg`.
typedef void (*mn_message_cb)(void *context, natsMsg *msg);
/// A message arrived on a queue-group subscription (`group` as given to `mn_subscribe`).
typedef void (*mn_shared_cb)(void *context, const char *group, natsMsg *msg);
/// A JetStream publish finished: `ok` 1 when stored, 0 with `error` otherwise.
typedef void (*mn_ack_cb)(void *context, uint64_t token, int ok, const char *error);
/// The connection's state changed: 0 disconnected, 1 reconnected.
typedef void (*mn_state_cb)(void *context, int state);
/// A key-value entry (retained messages): op 0 put, 1 delete or purge; a NULL key ends the
/// initial values.
typedef void (*mn_entry_cb)(void *context, const char *key, const void *value, int length, int op);

typedef struct mn_settings {
    const char **urls;
    int url_count;
    const char *name;
    const char *credentials_file;  // NULL: none
    const char *ca_file;           // NULL: no TLS unless the URL says tls://
    const char *cert_file;
    const char *key_file;
    int64_t ack_wait_ms;
    int max_pending_acks;
    void *context;
    mn_message_cb on_message;
    mn_shared_cb on_shared;
    mn_ack_cb on_ack;
    mn_state_cb on_state;
} mn_settings;

/// Connects (all URLs are tried; reconnects forever after): two connections, one for
/// everything that gets none of its own messages back (no echo), one for the share groups'
/// queue subscriptions, which may pick this node for its own messages. NULL with `error`
/// filled on failure.
mn_node *mn_connect(const mn_settings *settings, char *error, size_t error_length);
/// Whether JetStream answers (the account's information): 0 yes, -1 with `error`.
int mn_jetstream_check(mn_node *node, char *error, size_t error_length);
/// Creates the stream of `subject` (republishing each stored message to `republish_to`
/// unless NULL), or checks the existing one's replicas.
int mn_ensure_stream(mn_node *node, const char *name, const char *subject, const char *republish_to, int replicas,
                     int64_t max_age_seconds, int64_t max_bytes, char *error, size_t error_length);
/// Creates the key-value bucket (history 1), or checks its replicas.
int mn_ensure_bucket(mn_node *node, const char *bucket, int replicas, char *error, size_t error_length);
/// Subscribes `subject`; with `queue`, in that queue group, and its messages come through
/// `on_shared` with `group`. NULL on failure.
natsSubscription *mn_subscribe(mn_node *node, const char *subject, const char *queue, const char *group);
void mn_unsubscribe(natsSubscription *subscription);
/// Core publish; takes `msg`. 0 on success.
int mn_publish(mn_node *node, natsMsg *msg);
/// JetStream publish; takes `msg`. The acknowledgement comes through `on_ack` with the
/// message's `Martlet-Ack` header as its token. 0 when sent.
int mn_publish_stored(mn_node *node, natsMsg *msg);
/// Watches every key of `bucket` on a thread of its own: the current values, then a NULL
/// key, then every change (`meta_only`: keys and operations without values). 0 when
/// started; at most four per node.
int mn_watch_bucket(mn_node *node, const char *bucket, int meta_only, void *context, mn_entry_cb on_entry, char *error,
                    size_t error_length);
/// A key-value bucket opened once: NULL on failure.
kvStore *mn_open_bucket(mn_node *node, const char *bucket);
/// Creates `key` only if it does not exist: 0 created, 1 exists already, -1 error.
int mn_bucket_create(kvStore *bucket, const char *key, const void *value, int length);
/// Deletes `key` (waits for JetStream's acknowledgement). 0 on success.
int mn_bucket_delete(kvStore *bucket, const char *key);
/// The last revision of `key` in `bucket`, read from the bucket's stream (delete markers
/// included, which `kvStore_Get` hides): 0 with `*value` (free it with free()), `*length` and
/// `*revision`; 1 when the key has no value, with `*revision` the delete marker's (0 when the
/// key never had one); -1 on error.
int mn_bucket_read(mn_node *node, const char *bucket, const char *key, void **value, int *length, uint64_t *revision);
/// Compare-and-set: writes `value` (or, with `delete` 1, a delete marker) under `key` only if
/// the key's last revision is still `expected` (0: the key has never been written). 0 with
/// `*revision` the new one; 1 when another write came first (JetStream's wrong last
/// sequence); -1 on other errors (no quorum, timeout: the write may or may not be stored).
int mn_bucket_write(mn_node *node, const char *bucket, const char *key, const void *value, int length, int delete,
                    uint64_t expected, uint64_t *revision);
/// Calls `on_entry` for every current value whose key matches `keys` (a NATS subject
/// pattern, e.g. "node-1.>"), then returns: 0, or -1 on error.
int mn_bucket_entries(kvStore *bucket, const char *keys, void *context, mn_entry_cb on_entry);
/// Delivers every message of `stream` on `subject` stored from `start_ms` (wall clock), or
/// from sequence `start_seq` when it is not 0, up to sequence `end_seq` (0: the stream's last
/// message at the time of the call), in order, to `on_message` (which owns each).
/// 0 when all were read, -1 on error or when `timeout_ms` passed.
int mn_replay(mn_node *node, const char *stream, const char *subject, int64_t start_ms, uint64_t start_seq, uint64_t end_seq,
              int64_t timeout_ms, void *context, mn_message_cb on_message);

/// Flushes what is buffered to the server (bounded by `timeout_ms`). 0 when done.
int mn_flush(mn_node *node, int64_t timeout_ms);
/// 1 while connected.
int mn_connected(mn_node *node);
/// Closes the connection and stops the watcher. The node stays allocated (libnats may still
/// run a callback that reads it); the process is ending.
void mn_close(mn_node *node);

#endif
