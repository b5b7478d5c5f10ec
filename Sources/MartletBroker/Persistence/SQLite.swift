import CMartletSQLite
import NIOCore

/// An error from SQLite: the result code and SQLite's message.
public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    public var code: Int32
    public var message: String

    /// The disk (or the file system's quota) is full: SQLITE_FULL, or a write that failed
    /// with ENOSPC / EFBIG below it.
    public var isDiskFull: Bool {
        let primary = code & 0xFF
        return primary == SQLITE_FULL || (primary == SQLITE_IOERR && message.contains("disk"))
    }

    public var description: String { "SQLite error \(code): \(message)" }
}

/// One SQLite connection, used by one thread at a time (the store's writer, or startup):
/// the C API with prepared statements kept for the connection's life, nothing more.
final class SQLiteDatabase {
    private(set) var handle: OpaquePointer?
    private var statements: [String: SQLiteStatement] = [:]

    init(path: String) throws(SQLiteError) {
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close_v2(db)
            throw SQLiteError(code: rc, message: message)
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
    }

    deinit { close() }

    func close() {
        statements.removeAll()
        if let handle { sqlite3_close_v2(handle) }
        handle = nil
    }

    func error(_ rc: Int32) -> SQLiteError {
        SQLiteError(code: rc, message: handle.map { String(cString: sqlite3_errmsg($0)) } ?? "closed")
    }

    /// Runs SQL that returns no rows (several statements allowed).
    func execute(_ sql: String) throws(SQLiteError) {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc) }
    }

    /// A statement prepared once and reused.
    func statement(_ sql: String) throws(SQLiteError) -> SQLiteStatement {
        if let cached = statements[sql] {
            cached.reset()
            return cached
        }
        var pointer: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &pointer, nil)
        guard rc == SQLITE_OK, let pointer else { throw error(rc) }
        let statement = SQLiteStatement(pointer, database: self)
        statements[sql] = statement
        return statement
    }

    /// The first column of the first row, as text (PRAGMAs).
    func scalarText(_ sql: String) throws(SQLiteError) -> String? {
        let s = try statement(sql)
        defer { s.reset() }
        guard try s.step() else { return nil }
        return s.text(0)
    }

    func scalarInt(_ sql: String) throws(SQLiteError) -> Int64? {
        let s = try statement(sql)
        defer { s.reset() }
        guard try s.step(), !s.isNull(0) else { return nil }
        return s.int(0)
    }
}

/// A prepared statement: bind by 1-based index, step, read columns by 0-based index.
final class SQLiteStatement {
    private let pointer: OpaquePointer
    private unowned let database: SQLiteDatabase

    init(_ pointer: OpaquePointer, database: SQLiteDatabase) {
        self.pointer = pointer
        self.database = database
    }

    deinit { sqlite3_finalize(pointer) }

    func reset() {
        sqlite3_reset(pointer)
        sqlite3_clear_bindings(pointer)
    }

    @discardableResult
    func bind(_ index: Int32, _ value: Int64?) -> SQLiteStatement {
        if let value { sqlite3_bind_int64(pointer, index, value) } else { sqlite3_bind_null(pointer, index) }
        return self
    }

    @discardableResult
    func bind(_ index: Int32, _ value: Int) -> SQLiteStatement { bind(index, Int64(value)) }

    @discardableResult
    func bind(_ index: Int32, _ value: String?) -> SQLiteStatement {
        guard var value else {
            sqlite3_bind_null(pointer, index)
            return self
        }
        value.withUTF8 { utf8 in
            utf8.withMemoryRebound(to: CChar.self) {
                _ = martlet_sqlite3_bind_text_copy(pointer, index, $0.baseAddress, Int32($0.count))
            }
        }
        return self
    }

    @discardableResult
    func bind(_ index: Int32, _ value: ByteBuffer?) -> SQLiteStatement {
        guard let value else {
            sqlite3_bind_null(pointer, index)
            return self
        }
        value.withUnsafeReadableBytes {
            // A zero-length blob is still a blob, not NULL: SQLite needs a non-null pointer.
            _ = martlet_sqlite3_bind_blob_copy(pointer, index, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32($0.count))
        }
        return self
    }

    /// Steps once: true when a row is there to read, false when the statement is done.
    func step() throws(SQLiteError) -> Bool {
        let rc = sqlite3_step(pointer)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw database.error(rc)
        }
    }

    /// Runs a statement that returns no rows.
    func run() throws(SQLiteError) {
        _ = try step()
    }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(pointer, column) == SQLITE_NULL }
    func int(_ column: Int32) -> Int64 { sqlite3_column_int64(pointer, column) }
    func optionalInt(_ column: Int32) -> Int64? { isNull(column) ? nil : int(column) }

    func text(_ column: Int32) -> String? {
        guard let c = sqlite3_column_text(pointer, column) else { return nil }
        let count = Int(sqlite3_column_bytes(pointer, column))
        return String(decoding: UnsafeBufferPointer(start: c, count: count), as: UTF8.self)
    }

    func blob(_ column: Int32, allocator: ByteBufferAllocator) -> ByteBuffer? {
        if isNull(column) { return nil }
        let count = Int(sqlite3_column_bytes(pointer, column))
        var buffer = allocator.buffer(capacity: count)
        if count > 0, let bytes = sqlite3_column_blob(pointer, column) {
            buffer.writeBytes(UnsafeRawBufferPointer(start: bytes, count: count))
        }
        return buffer
    }
}
