import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing

/// Runs a shell script as root of a private mount namespace (`unshare -rm`), so it can mount
/// a small or read-only tmpfs without touching the host.
func inMountNamespace(_ script: String, environment: [String: String]) throws -> [String: String] {
    var env = ProcessInfo.processInfo.environment
    env.merge(environment) { _, new in new }
    let output = try runProcess("/usr/bin/unshare", ["-rm", "sh", "-c", script], environment: env)
    guard output.status == 0 else { throw HelperError("unshare script failed (\(output.status)): \(output.stderr)") }
    var values: [String: String] = [:]
    for line in output.stdout.split(separator: "\n") {
        if let equals = line.firstIndex(of: "=") { values[String(line[..<equals])] = String(line[line.index(after: equals)...]) }
    }
    values["stderr"] = output.stderr
    return values
}

@Suite("Disk full and read-only registries")
struct FileSystemFailureTests {
    @Test("a full disk fails the import with exit 78, the registry stays consistent, and a later import succeeds")
    func diskFull() throws {
        let cli = CLI()
        var generator = SeededGenerator(seed: 3)
        let big = cli.directory.file("big.safetensors")
        try SafeTensorsWriter.write(
            (0..<6).map { TensorData(name: "layer.\($0).weight", dtype: .u8, shape: [1 << 20], bytes: generator.bytes(1 << 20)) }, to: big)
        let small = try cli.base("small.safetensors")
        let mount = cli.directory.file("mnt")
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        let values = try inMountNamespace(
            """
            set -e
            mount -t tmpfs -o size=4m tmpfs "$MNT"
            "$GRAFT" init --registry "$MNT/r" >/dev/null
            set +e
            "$GRAFT" base add "$BIG" --name big --registry "$MNT/r" 2>"$MNT/err"; echo "big=$?"
            echo "message=$(cat "$MNT/err")"
            "$GRAFT" verify --read-data --registry "$MNT/r" >/dev/null; echo "verify=$?"
            echo "models=$("$GRAFT" list --json --registry "$MNT/r" | tr -d ' \\n')"
            echo "tmpfiles=$(ls -A "$MNT/r/tmp" | wc -l)"
            "$GRAFT" base add "$SMALL" --name small --registry "$MNT/r" >/dev/null; echo "small=$?"
            "$GRAFT" verify --read-data --registry "$MNT/r" >/dev/null; echo "verify2=$?"
            """,
            environment: ["MNT": mount, "GRAFT": graftBinary, "BIG": big, "SMALL": small])
        #expect(values["big"] == "78", "\(values)")
        #expect(values["message"]?.contains("disk full") == true, "\(values)")
        #expect(values["verify"] == "0")
        #expect(values["models"] == "[]")
        #expect(values["tmpfiles"] == "0", "temp files are removed on failure")
        #expect(values["small"] == "0", "\(values)")
        #expect(values["verify2"] == "0")
    }

    @Test("a read-only registry is refused with exit 77 and a clear message")
    func readOnly() throws {
        let cli = CLI()
        let base = try cli.base()
        let mount = cli.directory.file("mnt")
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        let values = try inMountNamespace(
            """
            set -e
            mount -t tmpfs tmpfs "$MNT"
            "$GRAFT" init --registry "$MNT/r" >/dev/null
            "$GRAFT" base add "$BASE" --name cnn --registry "$MNT/r" >/dev/null
            mount -o remount,ro "$MNT"
            set +e
            "$GRAFT" base add "$BASE" --name other --registry "$MNT/r" 2>"$MNT.err"; echo "add=$?"
            echo "message=$(cat "$MNT.err")"
            """,
            environment: ["MNT": mount, "GRAFT": graftBinary, "BASE": base])
        #expect(values["add"] == "77", "\(values)")
        #expect(values["message"]?.contains("read-only") == true, "\(values)")
    }

    @Test("a failed fsync is reported (exit 74), never retried, and nothing is committed; the next import succeeds")
    func failedFsync() throws {
        let cli = CLI()
        // A write-failure shim: fsync fails with EIO and counts its calls.
        let source = cli.directory.file("shim.c")
        try writeFile(
            source,
            Array(
                """
                #include <errno.h>
                #include <stdio.h>
                #include <stdlib.h>
                int fsync(int fd) {
                    const char *log = getenv("SHIM_LOG");
                    if (log) { FILE *f = fopen(log, "a"); if (f) { fputs("fsync\\n", f); fclose(f); } }
                    errno = EIO;
                    return -1;
                }
                """.utf8))
        let shim = cli.directory.file("shim.so")
        let compiled = try runProcess("/usr/bin/cc", ["-shared", "-fPIC", "-o", shim, source])
        try #require(compiled.status == 0, "\(compiled.stderr)")
        #expect(try cli.run(["init"]).status == 0)
        var generator = SeededGenerator(seed: 4)
        let file = cli.directory.file("one.safetensors")
        try SafeTensorsWriter.write([TensorData(name: "w", dtype: .u8, shape: [1 << 16], bytes: generator.bytes(1 << 16))], to: file)
        let log = cli.directory.file("fsync.log")
        let failed = try cli.run(["base", "add", file, "--name", "m"], environment: ["LD_PRELOAD": shim, "SHIM_LOG": log])
        #expect(failed.status == 74, "\(failed.stderr)")
        #expect(failed.stderr.contains("cannot flush"), "\(failed.stderr)")
        // The blob's one fsync failed and the import stopped: it was not tried again.
        #expect((try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").count == 1)
        #expect(try cli.run(["list", "--json"]).stdout.contains("\"m\"") == false)
        #expect(filesUnder(cli.registry + "/tmp").isEmpty && filesUnder(cli.registry + "/blobs").isEmpty)
        #expect(try cli.run(["base", "add", file, "--name", "m"]).status == 0)
        #expect(try cli.run(["verify", "--read-data"]).status == 0)
    }
}
