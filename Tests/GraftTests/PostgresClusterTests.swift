import Foundation
import GraftTestSupport
import Testing

/// The throwaway PostgreSQL cluster the PostgreSQL metadata store's tests will run on
/// (issue 14): it starts as the `postgres` user on a free loopback port, answers SQL, and is
/// gone — process and files — once stopped.
@Suite("A throwaway PostgreSQL cluster for tests")
struct PostgresClusterTests {
    @Test("starts on a free loopback port, answers SQL, and leaves nothing running or on disk once stopped")
    func lifecycle() throws {
        let cluster = try PostgresCluster()
        defer { cluster.stop() }
        #expect(cluster.url(database: "graft") == "postgresql://postgres@127.0.0.1:\(cluster.port)/graft")
        #expect(
            try cluster.psql(
                "SELECT current_setting('listen_addresses') || ' ' || current_setting('port') || ' ' || current_setting('fsync')")
                == "127.0.0.1 \(cluster.port) off\n")
        try cluster.psql("CREATE DATABASE graft")
        try cluster.psql(
            "CREATE TABLE t (id integer PRIMARY KEY, name text NOT NULL); INSERT INTO t VALUES (1, 'teacher'), (2, 'student')",
            database: "graft")
        #expect(try cluster.psql("SELECT name FROM t ORDER BY id", database: "graft") == "teacher\nstudent\n")
        let directory = cluster.directory
        cluster.stop()
        #expect(!FileManager.default.fileExists(atPath: directory))
        #expect(throws: (any Error).self) { try cluster.psql("SELECT 1") }
    }
}
