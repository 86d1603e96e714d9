import ArgumentParser
import Foundation
import Graft

extension GraftCommand {
    struct Backup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy a local registry, while it is in use, to a new directory: a complete registry of its own.",
            discussion: """
                Takes one moment's state of graft.sqlite with SQLite's online backup API (imports,
                commits and reads go on meanwhile; what they add after that moment is not in the
                copy), then every blob that state refers to: hard-linked when DEST_DIR is on the
                same file system (blobs are never changed in place, so the link costs nothing),
                else copied and flushed. Written under a hidden name beside DEST_DIR and renamed
                into place whole. `graft verify --read-data --registry DEST_DIR` checks it.
                To restore, stop every writer and move the copy to the registry's place (or point
                --registry at it). For an embedded registry only: a registry on PostgreSQL or with
                its blobs in S3 is backed up with pg_dump and the bucket's own versioning (exit 64).
                """)

        @Argument(help: ArgumentHelp("Where to write the copy (must not exist).", valueName: "dest-dir"))
        var destination: String
        @OptionGroup var options: RegistryOptions
        @OptionGroup var format: OutputOptions

        func run() async throws {
            if FileManager.default.fileExists(atPath: destination) {
                printError("\(destination) exists already; graft backup writes a new directory")
                throw ExitCode(ErrorKind.exists.exitCode)
            }
            try await GraftCLI.run { () throws(GraftError) in
                let registry = try await options.openLocal()
                let result = try await registry.backup(to: destination)
                if format.json { return try emitJSON(result) }
                print(
                    "backed up \(registry.layout.root) to \(result.path): \(formatCount(result.blobs)) blobs, \(formatBytes(result.bytes))"
                        + " (\(formatCount(result.linked)) hard-linked, \(formatCount(result.copied)) copied)")
            }
        }
    }
}
