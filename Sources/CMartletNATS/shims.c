#include "CMartletNATS.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mn_watch {
    kvStore *bucket;
    kvWatcher *watcher;
    pthread_t thread;
    volatile int watching;
    void *context;
    mn_entry_cb on_entry;
};

struct mn_node {
    // Publishes, subscribes by interest, carries JetStream, the buckets and the claims; it
    // gets nothing it published itself (no echo).
    natsConnection *connection;
    // Carries the share groups' queue subscriptions, which must be able to pick this node
    // for its own messages.
    natsConnection *subscriber;
    jsCtx *js;
    mn_settings settings;
    int64_t ack_wait_ms;
    // Bucket watchers, each on a thread of its own.
    mn_watch *watches[4];
    int watch_count;
    // Set by mn_close: callbacks that libnats still runs afterwards do nothing.
    volatile int closed;
};

static void open_library(void) { nats_Open(-1); }

static void describe(char *error, size_t length, const char *what, natsStatus status) {
    if (error == NULL || length == 0) return;
    const char *last = nats_GetLastError(NULL);
    snprintf(error, length, "%s: %s%s%s", what, natsStatus_GetText(status),
             last != NULL && last[0] != 0 ? " - " : "", last != NULL ? last : "");
}

static void on_message(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    (void)nc; (void)sub;
    mn_node *node = closure;
    if (node->closed) { natsMsg_Destroy(msg); return; }
    node->settings.on_message(node->settings.context, msg);
}

typedef struct mn_queue_context {
    mn_node *node;
    char *group;
} mn_queue_context;

static void on_queue_message(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    (void)nc; (void)sub;
    mn_queue_context *q = closure;
    if (q->node->closed || q->node->settings.on_shared == NULL) { natsMsg_Destroy(msg); return; }
    q->node->settings.on_shared(q->node->settings.context, q->group, msg);
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
    (void)js;
    mn_node *node = closure;
    const char *token = NULL;
    uint64_t value = 0;
    if (natsMsgHeader_Get(msg, "Martlet-Ack", &token) == NATS_OK && token != NULL) value = strtoull(token, NULL, 10);
    if (node->closed) {
        natsMsg_Destroy(msg);
        return;
    }
    if (pa != NULL && pae == NULL) {
        node->settings.on_ack(node->settings.context, value, 1, NULL);
    } else {
        char text[256];
        snprintf(text, sizeof text, "%s%s%s", pae != NULL ? natsStatus_GetText(pae->Err) : "no acknowledgement",
                 pae != NULL && pae->ErrText != NULL ? " - " : "", pae != NULL && pae->ErrText != NULL ? pae->ErrText : "");
        node->settings.on_ack(node->settings.context, value, 0, text);
    }
    natsMsg_Destroy(msg);
}

static void on_disconnected(natsConnection *nc, void *closure) {
    (void)nc;
    mn_node *node = closure;
    if (!node->closed && node->settings.on_state) node->settings.on_state(node->settings.context, 0);
}

static void on_reconnected(natsConnection *nc, void *closure) {
    (void)nc;
    mn_node *node = closure;
    if (!node->closed && node->settings.on_state) node->settings.on_state(node->settings.context, 1);
}

mn_node *mn_connect(const mn_settings *settings, char *error, size_t error_length) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    mn_node *node = calloc(1, sizeof *node);
    if (node == NULL) return NULL;
    node->settings = *settings;
    node->ack_wait_ms = settings->ack_wait_ms > 0 ? settings->ack_wait_ms : 5000;
    natsOptions *options = NULL;
    natsStatus s = natsOptions_Create(&options);
    if (s == NATS_OK) s = natsOptions_SetServers(options, settings->urls, settings->url_count);
    // The first server of the list that answers, in the list's order: a node is placed.
    if (s == NATS_OK) s = natsOptions_SetNoRandomize(options, true);
    if (s == NATS_OK && settings->name) s = natsOptions_SetName(options, settings->name);
    if (s == NATS_OK) s = natsOptions_SetAllowReconnect(options, true);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(options, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(options, 250);
    if (s == NATS_OK) s = natsOptions_SetTimeout(options, 2000);
    if (s == NATS_OK) s = natsOptions_SetPingInterval(options, 2000);
    if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(options, 2);
    // Messages buffered while reconnecting, in bytes.
    if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(options, 8 * 1024 * 1024);
    if (s == NATS_OK) s = natsOptions_SetMaxPendingMsgs(options, 1000000);
    // Every subscription's messages come through one thread, in the order the server sent
    // them: copies of one message for overlapping subscriptions arrive back to back.
    if (s == NATS_OK) s = natsOptions_UseGlobalMessageDelivery(options, true);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(options, on_disconnected, node);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(options, on_reconnected, node);
    if (s == NATS_OK && settings->credentials_file) s = natsOptions_SetUserCredentialsFromFiles(options, settings->credentials_file, NULL);
    if (s == NATS_OK && settings->ca_file) {
        s = natsOptions_SetSecure(options, true);
        if (s == NATS_OK) s = natsOptions_LoadCATrustedCertificates(options, settings->ca_file);
    }
    if (s == NATS_OK && settings->cert_file && settings->key_file)
        s = natsOptions_LoadCertificatesChain(options, settings->cert_file, settings->key_file);
    if (s != NATS_OK) {
        describe(error, error_length, "NATS options", s);
        natsOptions_Destroy(options);
        free(node);
        return NULL;
    }
    pthread_once(&once, open_library);
    nats_SetMessageDeliveryPoolSize(1);
    if (s == NATS_OK) s = natsOptions_SetNoEcho(options, true);
    if (s == NATS_OK) s = natsConnection_Connect(&node->connection, options);
    if (s == NATS_OK) {
        natsOptions_SetNoEcho(options, false);
        s = natsConnection_Connect(&node->subscriber, options);
        if (s != NATS_OK) natsConnection_Destroy(node->connection);
    }
    natsOptions_Destroy(options);
    if (s != NATS_OK) {
        describe(error, error_length, "cannot connect to NATS", s);
        free(node);
        return NULL;
    }
    jsOptions js;
    jsOptions_Init(&js);
    js.Wait = node->ack_wait_ms;
    js.PublishAsync.MaxPending = settings->max_pending_acks > 0 ? settings->max_pending_acks : 65536;
    js.PublishAsync.AckHandler = on_ack;
    js.PublishAsync.AckHandlerClosure = node;
    js.PublishAsync.StallWait = 1;
    s = natsConnection_JetStream(&node->js, node->connection, &js);
    if (s != NATS_OK) {
        describe(error, error_length, "JetStream context", s);
        natsConnection_Destroy(node->connection);
        free(node);
        return NULL;
    }
    return node;
}

int mn_jetstream_check(mn_node *node, char *error, size_t error_length) {
    jsAccountInfo *info = NULL;
    jsErrCode code = 0;
    natsStatus s = js_GetAccountInfo(&info, node->js, NULL, &code);
    if (s != NATS_OK) {
        describe(error, error_length, "JetStream is not available", s);
        return -1;
    }
    jsAccountInfo_Destroy(info);
    return 0;
}

int mn_ensure_stream(mn_node *node, const char *name, const char *subject, const char *republish_to, int replicas,
                     int64_t max_age_seconds, int64_t max_bytes, char *error, size_t error_length) {
    jsStreamInfo *info = NULL;
    jsErrCode code = 0;
    natsStatus s = js_GetStreamInfo(&info, node->js, name, NULL, &code);
    if (s == NATS_OK) {
        int have = (int)info->Config->Replicas;
        jsStreamInfo_Destroy(info);
        if (have != replicas) {
            if (error) snprintf(error, error_length, "stream %s has %d replicas; cluster.replicas is %d", name, have, replicas);
            return -1;
        }
        return 0;
    }
    if (s != NATS_NOT_FOUND) {
        describe(error, error_length, "stream information", s);
        return -1;
    }
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    config.Name = name;
    const char *subjects[1] = {subject};
    config.Subjects = subjects;
    config.SubjectsLen = 1;
    config.Storage = js_FileStorage;
    config.Replicas = replicas;
    config.MaxAge = max_age_seconds * 1000000000LL;
    config.MaxBytes = max_bytes > 0 ? max_bytes : -1;
    // Each stored message is published again, once stored, on the subjects the nodes follow.
    jsRePublish republish;
    if (republish_to != NULL) {
        jsRePublish_Init(&republish);
        republish.Source = subject;
        republish.Destination = republish_to;
        config.RePublish = &republish;
    }
    s = js_AddStream(&info, node->js, &config, NULL, &code);
    if (s != NATS_OK) {
        describe(error, error_length, "cannot create the stream", s);
        return -1;
    }
    jsStreamInfo_Destroy(info);
    return 0;
}

int mn_ensure_bucket(mn_node *node, const char *bucket, int replicas, char *error, size_t error_length) {
    kvStore *kv = NULL;
    natsStatus s = js_KeyValue(&kv, node->js, bucket);
    if (s == NATS_OK) {
        // The bucket is the stream KV_<bucket>: its replicas are the stream's.
        char stream[256];
        snprintf(stream, sizeof stream, "KV_%s", bucket);
        jsStreamInfo *info = NULL;
        jsErrCode code = 0;
        int have = replicas;
        if (js_GetStreamInfo(&info, node->js, stream, NULL, &code) == NATS_OK) {
            have = (int)info->Config->Replicas;
            jsStreamInfo_Destroy(info);
        }
        kvStore_Destroy(kv);
        if (have != replicas) {
            if (error) snprintf(error, error_length, "bucket %s has %d replicas; cluster.replicas is %d", bucket, have, replicas);
            return -1;
        }
        return 0;
    }
    kvConfig config;
    kvConfig_Init(&config);
    config.Bucket = bucket;
    config.History = 1;
    config.Replicas = replicas;
    config.StorageType = js_FileStorage;
    s = js_CreateKeyValue(&kv, node->js, &config);
    if (s != NATS_OK) {
        describe(error, error_length, "cannot create the bucket", s);
        return -1;
    }
    kvStore_Destroy(kv);
    return 0;
}

natsSubscription *mn_subscribe(mn_node *node, const char *subject, const char *queue, const char *group) {
    natsSubscription *sub = NULL;
    natsStatus s;
    if (queue != NULL) {
        // Freed never: a queue subscription's context lives as long as a callback may run.
        mn_queue_context *q = calloc(1, sizeof *q);
        q->node = node;
        q->group = strdup(group != NULL ? group : queue);
        s = natsConnection_QueueSubscribe(&sub, node->subscriber, subject, queue, on_queue_message, q);
    } else {
        s = natsConnection_Subscribe(&sub, node->connection, subject, on_message, node);
    }
    if (s != NATS_OK) return NULL;
    // A slow node buffers rather than drops (bounded by the connection's pending limit).
    natsSubscription_SetPendingLimits(sub, 1000000, 1024 * 1024 * 1024);
    return sub;
}

void mn_unsubscribe(natsSubscription *subscription) {
    natsSubscription_Unsubscribe(subscription);
    natsSubscription_Destroy(subscription);
}

int mn_publish(mn_node *node, natsMsg *msg) {
    natsStatus s = natsConnection_PublishMsg(node->connection, msg);
    natsMsg_Destroy(msg);
    return s == NATS_OK ? 0 : -1;
}

int mn_publish_stored(mn_node *node, natsMsg *msg) {
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MaxWait = node->ack_wait_ms;
    natsStatus s = js_PublishMsgAsync(node->js, &msg, &options);
    natsMsg_Destroy(msg);  // no effect when the library took it
    return s == NATS_OK ? 0 : -1;
}

static void *watch_loop(void *argument) {
    mn_watch *w = argument;
    while (w->watching) {
        kvEntry *entry = NULL;
        natsStatus s = kvWatcher_Next(&entry, w->watcher, 1000);
        if (s == NATS_TIMEOUT) continue;
        if (s != NATS_OK) break;
        if (entry == NULL) {
            w->on_entry(w->context, NULL, NULL, 0, 0);
            continue;
        }
        kvOperation op = kvEntry_Operation(entry);
        w->on_entry(w->context, kvEntry_Key(entry), kvEntry_Value(entry), kvEntry_ValueLen(entry), op == kvOp_Put ? 0 : 1);
        kvEntry_Destroy(entry);
    }
    return NULL;
}

int mn_watch_bucket(mn_node *node, const char *bucket, int meta_only, void *context, mn_entry_cb on_entry, char *error,
                    size_t error_length) {
    if (node->watch_count >= 4) {
        if (error) snprintf(error, error_length, "too many watchers");
        return -1;
    }
    mn_watch *w = calloc(1, sizeof *w);
    kvWatchOptions options;
    kvWatchOptions_Init(&options);
    options.MetaOnly = meta_only != 0;
    natsStatus s = js_KeyValue(&w->bucket, node->js, bucket);
    if (s == NATS_OK) s = kvStore_WatchAll(&w->watcher, w->bucket, &options);
    if (s != NATS_OK) {
        describe(error, error_length, "cannot watch the bucket", s);
        free(w);
        return -1;
    }
    w->context = context;
    w->on_entry = on_entry;
    w->watching = 1;
    if (pthread_create(&w->thread, NULL, watch_loop, w) != 0) {
        if (error) snprintf(error, error_length, "cannot start the watcher thread");
        return -1;
    }
    node->watches[node->watch_count++] = w;
    return 0;
}

kvStore *mn_open_bucket(mn_node *node, const char *bucket) {
    kvStore *kv = NULL;
    return js_KeyValue(&kv, node->js, bucket) == NATS_OK ? kv : NULL;
}

int mn_bucket_create(kvStore *bucket, const char *key, const void *value, int length) {
    uint64_t revision = 0;
    natsStatus s = kvStore_Create(&revision, bucket, key, value, length);
    if (s == NATS_OK) return 0;
    // JetStream refuses a create of an existing key as a wrong last sequence.
    const char *why = nats_GetLastError(NULL);
    return why != NULL && strstr(why, "wrong last sequence") != NULL ? 1 : -1;
}

int mn_bucket_delete(kvStore *bucket, const char *key) {
    return kvStore_Delete(bucket, key) == NATS_OK ? 0 : -1;
}

int mn_bucket_read(mn_node *node, const char *bucket, const char *key, void **value, int *length, uint64_t *revision) {
    char stream[256], subject[1024];
    snprintf(stream, sizeof stream, "KV_%s", bucket);
    if ((size_t)snprintf(subject, sizeof subject, "$KV.%s.%s", bucket, key) >= sizeof subject) return -1;
    natsMsg *msg = NULL;
    jsErrCode code = 0;
    *revision = 0;
    natsStatus s = js_GetLastMsg(&msg, node->js, stream, subject, NULL, &code);
    if (s == NATS_NOT_FOUND) return 1;
    if (s != NATS_OK) return -1;
    *revision = natsMsg_GetSequence(msg);
    const char *op = NULL;
    if (natsMsgHeader_Get(msg, "KV-Operation", &op) == NATS_OK && op != NULL) {
        natsMsg_Destroy(msg);
        return 1;
    }
    int n = natsMsg_GetDataLength(msg);
    void *copy = malloc(n > 0 ? (size_t)n : 1);
    if (copy == NULL) {
        natsMsg_Destroy(msg);
        return -1;
    }
    if (n > 0) memcpy(copy, natsMsg_GetData(msg), (size_t)n);
    natsMsg_Destroy(msg);
    *value = copy;
    *length = n;
    return 0;
}

int mn_bucket_write(mn_node *node, const char *bucket, const char *key, const void *value, int length, int delete,
                    uint64_t expected, uint64_t *revision) {
    char subject[1024], last[32];
    if ((size_t)snprintf(subject, sizeof subject, "$KV.%s.%s", bucket, key) >= sizeof subject) return -1;
    snprintf(last, sizeof last, "%llu", (unsigned long long)expected);
    natsMsg *msg = NULL;
    if (natsMsg_Create(&msg, subject, NULL, delete ? NULL : value, delete ? 0 : length) != NATS_OK) return -1;
    // Set as a header rather than jsPubOptions.ExpectLastSubjectSeq, where 0 means "no
    // check": here 0 means "never written".
    natsMsgHeader_Set(msg, "Nats-Expected-Last-Subject-Sequence", last);
    if (delete) natsMsgHeader_Set(msg, "KV-Operation", "DEL");
    jsPubAck *ack = NULL;
    jsErrCode code = 0;
    natsStatus s = js_PublishMsg(&ack, node->js, msg, NULL, &code);
    natsMsg_Destroy(msg);
    if (s == NATS_OK && ack != NULL) {
        *revision = ack->Sequence;
        jsPubAck_Destroy(ack);
        return 0;
    }
    if (ack != NULL) jsPubAck_Destroy(ack);
    return code == JSStreamWrongLastSequenceErr ? 1 : -1;
}

int mn_bucket_entries(kvStore *bucket, const char *keys, void *context, mn_entry_cb on_entry) {
    kvWatcher *watcher = NULL;
    kvWatchOptions options;
    kvWatchOptions_Init(&options);
    options.IgnoreDeletes = true;
    if (kvStore_Watch(&watcher, bucket, keys, &options) != NATS_OK) return -1;
    int result = 0;
    while (1) {
        kvEntry *entry = NULL;
        natsStatus s = kvWatcher_Next(&entry, watcher, 5000);
        if (s != NATS_OK) { result = -1; break; }
        if (entry == NULL) break;
        on_entry(context, kvEntry_Key(entry), kvEntry_Value(entry), kvEntry_ValueLen(entry), 0);
        kvEntry_Destroy(entry);
    }
    kvWatcher_Destroy(watcher);
    return result;
}

int mn_replay(mn_node *node, const char *stream, const char *subject, int64_t start_ms, uint64_t start_seq, uint64_t end_seq,
              int64_t timeout_ms, void *context, mn_message_cb on_message) {
    jsStreamInfo *info = NULL;
    jsErrCode code = 0;
    if (js_GetStreamInfo(&info, node->js, stream, NULL, &code) != NATS_OK) return -1;
    uint64_t last = info->State.LastSeq;
    int64_t last_time = info->State.LastTime;
    jsStreamInfo_Destroy(info);
    if (end_seq > 0 && end_seq < last) last = end_seq;
    if (last == 0 || (start_seq == 0 && last_time < start_ms * 1000000LL) || (start_seq > last)) return 0;
    jsSubOptions options;
    jsSubOptions_Init(&options);
    options.Stream = stream;
    options.Ordered = true;
    if (start_seq > 0) {
        options.Config.DeliverPolicy = js_DeliverByStartSequence;
        options.Config.OptStartSeq = start_seq;
    } else {
        options.Config.DeliverPolicy = js_DeliverByStartTime;
        options.Config.OptStartTime = start_ms * 1000000LL;
    }
    natsSubscription *sub = NULL;
    if (js_SubscribeSync(&sub, node->js, subject, NULL, &options, &code) != NATS_OK) return -1;
    int result = 0;
    int64_t deadline = nats_Now() + timeout_ms;
    while (1) {
        natsMsg *msg = NULL;
        int64_t left = deadline - nats_Now();
        if (left <= 0) { result = -1; break; }
        if (natsSubscription_NextMsg(&msg, sub, left) != NATS_OK) { result = -1; break; }
        jsMsgMetaData *meta = NULL;
        uint64_t seq = 0;
        if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
            seq = meta->Sequence.Stream;
            jsMsgMetaData_Destroy(meta);
        }
        if (seq > last) {
            natsMsg_Destroy(msg);
            break;
        }
        on_message(context, msg);
        if (seq >= last) break;
    }
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    return result;
}

int mn_flush(mn_node *node, int64_t timeout_ms) {
    // Nothing can reach a server while the connection is down: no waiting for it.
    if (!mn_connected(node)) return -1;
    natsStatus s = natsConnection_FlushTimeout(node->connection, timeout_ms);
    if (s == NATS_OK) s = natsConnection_FlushTimeout(node->subscriber, timeout_ms);
    return s == NATS_OK ? 0 : -1;
}

int mn_connected(mn_node *node) {
    return natsConnection_Status(node->connection) == NATS_CONN_STATUS_CONNECTED
        && natsConnection_Status(node->subscriber) == NATS_CONN_STATUS_CONNECTED;
}

void mn_close(mn_node *node) {
    node->closed = 1;
    // The connections first: a watcher stopped on a live connection deletes its consumer
    // with a JetStream request, which waits out its timeout when no server answers (the
    // server drops the ordered consumers of a closed connection by itself).
    natsConnection_Close(node->subscriber);
    natsConnection_Close(node->connection);
    for (int i = 0; i < node->watch_count; i++) {
        mn_watch *w = node->watches[i];
        w->watching = 0;
        kvWatcher_Stop(w->watcher);
        pthread_join(w->thread, NULL);
        kvWatcher_Destroy(w->watcher);
        kvStore_Destroy(w->bucket);
    }
    // The node itself stays allocated: libnats may still run a callback that reads it.
}
