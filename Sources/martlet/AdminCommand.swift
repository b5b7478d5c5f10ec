import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import MartletTLS

/// `martlet admin …`: the broker's admin API (`/api/v1/`) from the shell — a table for people,
/// `--json` for scripts.
struct AdminCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin",
        abstract: "Inspect and manage a running martletd through its admin API.",
        discussion: """
            The API is on martletd's metrics endpoint when admin_token_file is set. The token \
            comes from --token-file or MARTLET_ADMIN_TOKEN. Exit status: 0 done, 1 refused or \
            not found (the API's error is printed), 2 cannot reach the endpoint.
            """,
        subcommands: [Clients.self, Kick.self, Sessions.self, Retained.self, Stats.self, User.self]
    )

    struct Options: ParsableArguments {
        @Option(help: "The metrics endpoint of martletd (https:// when it has tls).") var url = "http://127.0.0.1:9883"
        @Option(help: "CA file to verify an https endpoint (default: the system's).") var cafile: String?
        @Flag(help: "Do not verify an https endpoint's certificate.") var insecure = false
        @Option(help: "A file whose first line is an admin token (default: $MARTLET_ADMIN_TOKEN).") var tokenFile: String?
        @Flag(help: "Print the API's JSON as it is.") var json = false

        func token() throws -> String {
            if let tokenFile {
                guard let text = try? String(contentsOfFile: tokenFile, encoding: .utf8) else { throw ValidationError("cannot read \(tokenFile)") }
                guard let line = text.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }).first(where: { !$0.isEmpty && !$0.hasPrefix("#") })
                else { throw ValidationError("no token in \(tokenFile)") }
                return line
            }
            guard let token = ProcessInfo.processInfo.environment["MARTLET_ADMIN_TOKEN"], !token.isEmpty else {
                throw ValidationError("give --token-file or set MARTLET_ADMIN_TOKEN")
            }
            return token
        }

        /// Calls the API; prints its error and exits 1 on a 4xx/5xx.
        func call(_ method: HTTPMethod, _ path: String, body: String? = nil) async throws -> Data {
            let response: AdminHTTP.Response
            do {
                response = try await AdminHTTP.request(method, url: url, path: "/api/v1" + path, token: try token(), body: body,
                                                       cafile: cafile, insecure: insecure)
            } catch let error as ValidationError {
                throw error
            } catch {
                warn("Error: cannot reach \(url): \(error)")
                throw ExitCode(2)
            }
            guard response.status < 400 else {
                let message = (try? JSONSerialization.jsonObject(with: response.body) as? [String: Any])?["error"] as? String
                warn("Error: \(response.status): \(message ?? String(decoding: response.body, as: UTF8.self))")
                throw ExitCode(1)
            }
            return response.body
        }

        /// The JSON as it came (`--json`), or nil for the caller to print a table.
        func printJSON(_ data: Data) -> Bool {
            guard json else { return false }
            print(String(decoding: data, as: UTF8.self))
            return true
        }
    }

    struct Clients: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Clients and their sessions: queue, in-flight, drops.")
        @OptionGroup var options: Options
        @Option(help: "Client ids starting with this.") var prefix: String?
        @Option(help: "connected, offline, lagging or stalled.") var state: String?
        @Option(help: "id, queued or dropped.") var sort = "id"
        @Option(help: "At most this many.") var limit = 100

        func run() async throws {
            var query = "?sort=\(sort)&limit=\(limit)"
            if let prefix { query += "&prefix=\(AdminHTTP.escape(prefix))" }
            if let state { query += "&state=\(state)" }
            let data = try await options.call(.GET, "/clients" + query)
            if options.printJSON(data) { return }
            let page = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
            let items = page["items"] as? [[String: Any]] ?? []
            printTable(["ID", "USER", "STATE", "ADDRESS", "PROTO", "SUBS", "QUEUED", "BYTES", "INFLIGHT", "DROPPED"], items.map { c in
                [c["id"], c["username"], (c["connected"] as? Bool == true) ? ((c["lagging"] as? Bool == true) ? "lagging" : "connected") : "offline",
                 c["remote_address"], c["protocol"], c["subscriptions"], c["queued_messages"], c["queued_bytes"], c["inflight"], c["dropped_total"]]
            })
            print("\(items.count) of \(page["total"] ?? 0)")
        }
    }

    struct Kick: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disconnect a client (MQTT 5: DISCONNECT 0x98 Administrative action).")
        @OptionGroup var options: Options
        @Argument(help: "The client id.") var id: String
        @Flag(help: "End its session too (what it queued is dropped).") var discardSession = false

        func run() async throws {
            _ = try await options.call(.DELETE, "/clients/\(AdminHTTP.escape(id))" + (discardSession ? "?discard_session=true" : ""))
            if !options.json { print("disconnected \(id)") }
        }
    }

    struct Sessions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Offline sessions kept for their clients.")
        @OptionGroup var options: Options
        @Option(help: "At most this many.") var limit = 100

        func run() async throws {
            let data = try await options.call(.GET, "/sessions?limit=\(limit)")
            if options.printJSON(data) { return }
            let items = (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["items"] as? [[String: Any]] ?? []
            printTable(["ID", "USER", "EXPIRY_S", "SUBS", "QUEUED", "BYTES", "DROPPED"], items.map { s in
                [s["id"], s["username"], s["session_expiry_s"] ?? "never", s["subscriptions"], s["queued_messages"], s["queued_bytes"], s["dropped_total"]]
            })
        }
    }

    struct Retained: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Retained messages matching a filter.")
        @OptionGroup var options: Options
        @Option(help: "A topic filter.") var match = "#"
        @Option(help: "Delete the retained message of this topic instead.") var delete: String?
        @Option(help: "At most this many.") var limit = 100

        func run() async throws {
            if let delete {
                _ = try await options.call(.DELETE, "/topics/retained?topic=\(AdminHTTP.escape(delete))")
                if !options.json { print("deleted the retained message of \(delete)") }
                return
            }
            let data = try await options.call(.GET, "/topics/retained?match=\(AdminHTTP.escape(match))&limit=\(limit)")
            if options.printJSON(data) { return }
            let items = (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["items"] as? [[String: Any]] ?? []
            printTable(["TOPIC", "QOS", "BYTES", "PAYLOAD"], items.map { r in [r["topic"], r["qos"], r["bytes"], r["payload"]] })
        }
    }

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The broker's figures (those of /metrics).")
        @OptionGroup var options: Options

        func run() async throws {
            let data = try await options.call(.GET, "/stats")
            if options.printJSON(data) { return }
            let stats = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
            var rows: [[Any?]] = []
            for key in stats.keys.sorted() {
                if let labelled = stats[key] as? [String: Any] {
                    for label in labelled.keys.sorted() { rows.append(["\(key){\(label)}", labelled[label]]) }
                } else {
                    rows.append([key, stats[key]])
                }
            }
            printTable(["FIGURE", "VALUE"], rows)
        }
    }

    struct User: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Users of password_file, changed at run time.",
            subcommands: [Add.self, Del.self, Passwd.self, List.self])

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Add a user.")
            @OptionGroup var options: Options
            @Argument var name: String
            @Argument var password: String
            func run() async throws { try await setPassword(options, name, password, verb: "added") }
        }

        struct Passwd: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Change a user's password.")
            @OptionGroup var options: Options
            @Argument var name: String
            @Argument var password: String
            func run() async throws { try await setPassword(options, name, password, verb: "changed the password of") }
        }

        struct Del: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Remove a user.")
            @OptionGroup var options: Options
            @Argument var name: String
            func run() async throws {
                _ = try await options.call(.DELETE, "/users/\(AdminHTTP.escape(name))")
                if !options.json { print("removed \(name)") }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List the users.")
            @OptionGroup var options: Options
            func run() async throws {
                let data = try await options.call(.GET, "/users")
                if options.printJSON(data) { return }
                for name in try JSONSerialization.jsonObject(with: data) as? [String] ?? [] { print(name) }
            }
        }

        static func setPassword(_ options: Options, _ name: String, _ password: String, verb: String) async throws {
            let body = try JSONSerialization.data(withJSONObject: ["username": name, "password": password])
            _ = try await options.call(.POST, "/users", body: String(decoding: body, as: UTF8.self))
            if !options.json { print("\(verb) \(name)") }
        }
    }
}

/// Prints rows under a header, columns padded to their widest cell.
func printTable(_ header: [String], _ rows: [[Any?]]) {
    let cells = [header] + rows.map { $0.map { value -> String in
        switch value {
        case nil, is NSNull: return "-"
        case let s as String: return s
        default: return "\(value!)"
        }
    } }
    let widths = header.indices.map { i in cells.map { $0[i].count }.max() ?? 0 }
    for row in cells {
        print(row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  "))
    }
}

/// One HTTP/1.1 request to the admin API over NIO (plain HTTP).
enum AdminHTTP {
    struct Response: Sendable {
        var status: Int
        var body: Data
    }

    static func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? text
    }

    static func request(_ method: HTTPMethod, url: String, path: String, token: String, body: String?,
                        cafile: String? = nil, insecure: Bool = false) async throws -> Response {
        guard let parsed = URLComponents(string: url), parsed.scheme == "http" || parsed.scheme == "https", let host = parsed.host else {
            throw ValidationError("--url must be http://host:port or https://host:port (got \(url))")
        }
        let secure = parsed.scheme == "https"
        let port = parsed.port ?? (secure ? 443 : 80)
        var tls: TLSContext?
        if secure {
            var configuration = TLSConfiguration.client(caFile: cafile, serverName: host)
            configuration.applicationProtocols = []
            if insecure { configuration.peerVerification = .none }
            tls = try TLSContext.client(configuration)
        }
        let collector = ResponseCollector()
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(5))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls { try channel.pipeline.syncOperations.addHandler(TLSHandler(context: tls, serverName: host)) }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(collector)
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            collector.fail(error)
            throw error
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(host):\(port)")
        headers.add(name: "Authorization", value: "Bearer \(token)")
        headers.add(name: "Connection", value: "close")
        let bytes = body.map { ByteBuffer(string: $0) }
        if let bytes {
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: "\(bytes.readableBytes)")
        }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let bytes { channel.write(HTTPClientRequestPart.body(.byteBuffer(bytes)), promise: nil) }
        try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
        let timeout = channel.eventLoop.scheduleTask(in: .seconds(30)) { channel.close(promise: nil) }
        defer { timeout.cancel() }
        return try await collector.response.get()
    }

    /// Gathers the response head and body; completes at its end (or fails if the connection closes first).
    final class ResponseCollector: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<Response>
        private let state = NIOLockedValueBox<(status: Int, body: [UInt8], done: Bool)>((0, [], false))
        var response: EventLoopFuture<Response> { promise.futureResult }

        init() { promise = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Response.self) }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): state.withLockedValue { $0.status = Int(head.status.code) }
            case .body(let part): state.withLockedValue { $0.body += part.readableBytesView }
            case .end:
                let (status, body, done) = state.withLockedValue { s in
                    defer { s.done = true }
                    return s
                }
                if !done { promise.succeed(Response(status: status, body: Data(body))) }
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) { fail(ChannelError.eof) }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            fail(error)
            context.close(promise: nil)
        }

        func fail(_ error: any Error) {
            let done = state.withLockedValue { s in
                defer { s.done = true }
                return s.done
            }
            if !done { promise.fail(error) }
        }
    }
}
