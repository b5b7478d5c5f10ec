import MartletMQTT

/// Why the broker closes a client connection, and what that means on the wire and in the
/// counters.
enum CloseReason: Sendable, Equatable {
    /// A malformed packet or a protocol violation: the will is published.
    case protocolError(ReasonCode, String)
    case keepAliveTimeout
    case connectTimeout
    case sessionTakenOver
    case serverShuttingDown
    /// The socket stayed unwritable for `write_timeout`.
    case writeTimeout
    /// The `disconnect` slow-consumer policy.
    case slowConsumer
    /// The client sent DISCONNECT.
    case clientDisconnected
    /// Refused at CONNECT (with a CONNACK saying why): no session, no will.
    case refused(String)
    /// An operator disconnected it through the admin API (`DELETE /api/v1/clients/{id}`).
    case administrative

    /// The v5 DISCONNECT reason code the client is told (MQTT 5 4.13), if it is told one.
    var reasonCode: ReasonCode? {
        switch self {
        case .protocolError(let code, _): return code
        case .keepAliveTimeout: return .keepAliveTimeout
        case .connectTimeout, .writeTimeout, .clientDisconnected, .refused: return nil
        case .sessionTakenOver: return .sessionTakenOver
        case .serverShuttingDown: return .serverShuttingDown
        case .slowConsumer: return .quotaExceeded
        case .administrative: return .administrativeAction
        }
    }

    /// What a v5 Reason String says of it (`reason_strings`).
    var explanation: String {
        switch self {
        case .protocolError(_, let why): return why
        case .keepAliveTimeout: return "keepalive expired: no packet for 1.5 times the keepalive"
        case .connectTimeout: return "no CONNECT within connect_timeout"
        case .sessionTakenOver: return "another connection took over this client id"
        case .serverShuttingDown: return "server shutting down"
        case .writeTimeout: return "the socket stayed unwritable for write_timeout"
        case .slowConsumer: return "slow consumer: the outbox stayed full past slow_consumer_grace_ms"
        case .clientDisconnected: return "client disconnected"
        case .refused(let why): return why
        case .administrative: return "disconnected by an administrator"
        }
    }

    /// The total this close adds one to, if any.
    var counter: WritableKeyPath<BrokerCounters.Snapshot, Int>? {
        switch self {
        case .protocolError: \.protocolErrors
        case .keepAliveTimeout: \.keepaliveExpiries
        case .connectTimeout: \.connectTimeouts
        case .writeTimeout: \.writeTimeouts
        case .sessionTakenOver, .serverShuttingDown, .slowConsumer, .clientDisconnected, .refused, .administrative: nil
        }
    }
}

/// Why a listener refuses every connection at CONNECT before any session is touched (the
/// connection or connection-rate limit).
struct Refusal: Sendable {
    var v3: ConnectReturnCode
    var v5: ReasonCode
    var why: String
}
