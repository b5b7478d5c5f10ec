#ifndef C_MARTLET_SQLITE_H
#define C_MARTLET_SQLITE_H

// Debian's libsqlite3 (libsqlite3-dev), the store behind `persistence:`.
#include <sqlite3.h>

// SQLITE_TRANSIENT is a cast of -1 to a function pointer, which Swift cannot import:
// these bind a value that SQLite copies before they return.
int martlet_sqlite3_bind_blob_copy(sqlite3_stmt *statement, int index, const void *bytes, int count);
int martlet_sqlite3_bind_text_copy(sqlite3_stmt *statement, int index, const char *text, int count);

#endif
