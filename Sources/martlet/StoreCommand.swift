import ArgumentParser
import CMartletSQLite

#if canImport(Glibc)
import Glibc
#endif

/// `martlet store backup FILE COPY`: a consistent copy of martletd's session store while the
/// broker runs (SQLite's `VACUUM INTO` reads one snapshot of the WAL-mode file).
struct StoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Work with martletd's session store (persistence.path).",
        subcommands: [Backup.self]
    )

    struct Backup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy the store to a new file, consistently, while martletd runs.",
            discussion: "To restore, stop martletd, put the copy in place of the store and remove its -wal and -shm files."
        )

        @Argument(help: "The store (persistence.path).") var store: String
        @Argument(help: "The copy to write (must not exist).") var copy: String

        func run() throws {
            guard access(store, R_OK) == 0 else { throw ValidationError("cannot read \(store)") }
            guard access(copy, F_OK) != 0 else { throw ValidationError("\(copy) exists; give a new file") }
            var db: OpaquePointer?
            guard sqlite3_open_v2(store, &db, SQLITE_OPEN_READONLY, nil) == SQLITE_OK, let db else {
                throw ValidationError("cannot open \(store): \(db.map { String(cString: sqlite3_errmsg($0)) } ?? "?")")
            }
            defer { sqlite3_close_v2(db) }
            sqlite3_busy_timeout(db, 5000)
            let quoted = copy.replacingOccurrences(of: "'", with: "''")
            guard sqlite3_exec(db, "VACUUM INTO '\(quoted)'", nil, nil, nil) == SQLITE_OK else {
                throw ValidationError("backup failed: \(String(cString: sqlite3_errmsg(db)))")
            }
            print("backed up \(store) to \(copy)")
        }
    }
}
