extension AdminAPI {
    /// `GET /api/v1/openapi.json`. Written by hand; `AdminAPITests` checks that every entry of
    /// `routes` is in it.
    static let openAPIDocument = #"""
    {
      "openapi": "3.0.3",
      "info": {"title": "Martlet admin API", "version": "1"},
      "servers": [{"url": "/api/v1"}],
      "components": {
        "securitySchemes": {"token": {"type": "http", "scheme": "bearer", "description": "A line of admin_token_file"}},
        "schemas": {
          "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
          "Client": {"type": "object", "properties": {
            "id": {"type": "string"}, "username": {"type": "string"}, "protocol": {"type": "string"},
            "connected": {"type": "boolean"}, "remote_address": {"type": "string"}, "listener": {"type": "string"},
            "transport": {"type": "string", "enum": ["tcp", "tls", "ws", "wss"]}, "connected_at": {"type": "integer"},
            "tls_version": {"type": "string"}, "tls_cipher": {"type": "string"},
            "keepalive_s": {"type": "integer"}, "session_expiry_s": {"type": "integer"}, "subscriptions": {"type": "integer"},
            "queued_messages": {"type": "integer"}, "queued_bytes": {"type": "integer"}, "inflight": {"type": "integer"},
            "dropped": {"type": "object", "additionalProperties": {"type": "integer"}}, "dropped_total": {"type": "integer"},
            "lagging": {"type": "boolean"}, "stalled": {"type": "boolean"},
            "subscription_list": {"type": "array", "items": {"$ref": "#/components/schemas/Subscription"}}}},
          "Subscription": {"type": "object", "properties": {
            "client_id": {"type": "string"}, "filter": {"type": "string"}, "qos": {"type": "integer"},
            "no_local": {"type": "boolean"}, "retain_as_published": {"type": "boolean"}}},
          "Retained": {"type": "object", "properties": {
            "topic": {"type": "string"}, "qos": {"type": "integer"}, "bytes": {"type": "integer"}, "payload": {"type": "string"}}},
          "Listener": {"type": "object", "properties": {
            "host": {"type": "string"}, "port": {"type": "integer"}, "bound": {"type": "string"}, "tls": {"type": "boolean"},
            "websocket": {"type": "boolean"}, "proxy_protocol": {"type": "boolean"}, "allow_anonymous": {"type": "boolean"},
            "max_connections": {"type": "integer"}}},
          "Page": {"type": "object", "properties": {
            "total": {"type": "integer"}, "offset": {"type": "integer"}, "limit": {"type": "integer"}, "items": {"type": "array"}}}
        },
        "parameters": {
          "offset": {"name": "offset", "in": "query", "schema": {"type": "integer", "default": 0}},
          "limit": {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100, "maximum": 1000}},
          "id": {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "client id (percent-encoded)"}
        }
      },
      "security": [{"token": []}],
      "paths": {
        "/clients": {
          "get": {"summary": "Sessions, connected or not, paged",
            "parameters": [{"$ref": "#/components/parameters/offset"}, {"$ref": "#/components/parameters/limit"},
              {"name": "prefix", "in": "query", "schema": {"type": "string"}, "description": "client id prefix"},
              {"name": "user", "in": "query", "schema": {"type": "string"}},
              {"name": "address", "in": "query", "schema": {"type": "string"}, "description": "part of the remote address"},
              {"name": "state", "in": "query", "schema": {"type": "string", "enum": ["connected", "offline", "lagging", "stalled"]}},
              {"name": "sort", "in": "query", "schema": {"type": "string", "enum": ["id", "queued", "dropped"]}}],
            "responses": {"200": {"description": "a Page of Client"}, "400": {"description": "bad parameter"}}}
        },
        "/clients/{id}": {
          "get": {"summary": "One session with its subscriptions", "parameters": [{"$ref": "#/components/parameters/id"}],
            "responses": {"200": {"description": "Client with subscription_list"}, "404": {"description": "no such session"}}},
          "delete": {"summary": "Disconnect a connected client (MQTT 5: DISCONNECT 0x98 Administrative action)",
            "parameters": [{"$ref": "#/components/parameters/id"},
              {"name": "discard_session", "in": "query", "schema": {"type": "boolean"}, "description": "end its session too"}],
            "responses": {"204": {"description": "disconnected"}, "404": {"description": "not connected"}}}
        },
        "/sessions": {
          "get": {"summary": "Offline sessions kept for their clients",
            "parameters": [{"$ref": "#/components/parameters/offset"}, {"$ref": "#/components/parameters/limit"}],
            "responses": {"200": {"description": "a Page of Client"}}}
        },
        "/sessions/{id}": {
          "delete": {"summary": "End an offline session and what it queued", "parameters": [{"$ref": "#/components/parameters/id"}],
            "responses": {"204": {"description": "ended"}, "404": {"description": "no offline session"}}}
        },
        "/subscriptions": {
          "get": {"summary": "Subscriptions, all or those a filter covers",
            "parameters": [{"name": "filter", "in": "query", "schema": {"type": "string"}},
              {"$ref": "#/components/parameters/offset"}, {"$ref": "#/components/parameters/limit"}],
            "responses": {"200": {"description": "a Page of Subscription"}, "400": {"description": "bad filter"}}}
        },
        "/topics/retained": {
          "get": {"summary": "Retained messages matching a filter",
            "parameters": [{"name": "match", "in": "query", "schema": {"type": "string", "default": "#"}},
              {"$ref": "#/components/parameters/offset"}, {"$ref": "#/components/parameters/limit"}],
            "responses": {"200": {"description": "a Page of Retained"}, "400": {"description": "bad filter"}}},
          "delete": {"summary": "Delete the retained message of a topic",
            "parameters": [{"name": "topic", "in": "query", "required": true, "schema": {"type": "string"}}],
            "responses": {"204": {"description": "deleted"}, "400": {"description": "bad topic"}, "404": {"description": "nothing retained there"}}}
        },
        "/publish": {
          "post": {"summary": "Publish as the broker, as far as the ACL lets admin_user",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["topic"],
              "properties": {"topic": {"type": "string"}, "payload": {"type": "string"}, "qos": {"type": "integer", "enum": [0, 1, 2]},
                "retain": {"type": "boolean"}}}}}},
            "responses": {"204": {"description": "published"}, "400": {"description": "bad JSON, topic or QoS"},
              "403": {"description": "the ACL does not let admin_user publish there"}}}
        },
        "/stats": {
          "get": {"summary": "Every figure of /metrics as JSON (labelled ones as objects)", "responses": {"200": {"description": "figures"}}}
        },
        "/listeners": {
          "get": {"summary": "Listeners, their settings and bound addresses", "responses": {"200": {"description": "a list of Listener"}}}
        },
        "/users": {
          "get": {"summary": "The user names of password_file", "responses": {"200": {"description": "a list of names"}, "409": {"description": "no password_file"}}},
          "post": {"summary": "Add a user or change a password (written to password_file, applied as SIGHUP would)",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["username", "password"],
              "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}}}},
            "responses": {"201": {"description": "added"}, "200": {"description": "password changed"}, "400": {"description": "bad JSON"},
              "409": {"description": "no password_file"}}}
        },
        "/users/{id}": {
          "delete": {"summary": "Remove a user from password_file", "parameters": [{"$ref": "#/components/parameters/id"}],
            "responses": {"204": {"description": "removed"}, "404": {"description": "no such user"}, "409": {"description": "no password_file"}}}
        },
        "/acl": {
          "get": {"summary": "The text of acl_file", "responses": {"200": {"description": "{\"acl\": text}"}, "409": {"description": "no acl_file"}}},
          "put": {"summary": "Replace acl_file (mosquitto's format; checked, written, applied as SIGHUP would)",
            "requestBody": {"required": true, "content": {"text/plain": {"schema": {"type": "string"}}}},
            "responses": {"204": {"description": "replaced"}, "400": {"description": "the ACL does not parse"}, "409": {"description": "no acl_file"}}}
        }
      }
    }
    """#
}
