import Foundation
public import GraftCore
import GraftLocal
import GraftSQLite
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What `graft backup` wrote.
public struct BackupResult: Sendable, Codable, Equatable {
    /// The new registry.
    public var path: String
    /// Blobs stored as files that the snapshot refers to, and their bytes.
    public var blobs: Int
    public var bytes: Int
    /// Of those, hard-linked (same file system: no bytes copied) and copied.
    public var linked: Int
    public var copied: Int
}

extension Registry {
    /// A consistent copy of an embedded registry (SQLite metadata, blobs on local disk) as a
    /// new registry at `destination`, taken while the registry is in use: the database through
    /// SQLite's online backup API (one moment's state; writers go on meanwhile), then every blob
    /// that state refers to, hard-linked where the destination is on the same file system
    /// (blobs are immutable, so a link is a copy that costs nothing), else copied and flushed.
    /// Built under a hidden name beside `destination` and renamed into place whole, so an
    /// interrupted backup leaves no half registry behind.
    /// - Throws: ``GraftError/outputExists(path:)``; ``GraftError/badRequest(_:)`` for a registry
    ///   on PostgreSQL or S3; ``GraftError/blobVanished(_:)`` when gc removed a blob the snapshot
    ///   needs while it ran (run it again).
    public func backup(to destination: String) async throws(GraftError) -> BackupResult {
        guard let database = metadata as? SQLiteMetadataStore, blobs.store is LocalBlobStore else {
            throw .badRequest(
                "graft backup copies an embedded registry (graft.sqlite and blobs on this disk); back up PostgreSQL with pg_dump and "
                    + "S3 with bucket versioning or replication")
        }
        let target = RegistryLayout(root: destination)
        if FileSystem.fileExists(target.root) { throw .outputExists(path: target.root) }
        let (parent, name) = FileSystem.parentAndName(target.root)
        let staging = RegistryLayout(root: parent + "/." + name + "." + FileSystem.uniqueName(suffix: ".backup"))
        let source = layout
        do throws(GraftError) {
            try FileSystem.makeDirectory(staging.root, mode: 0o700)
            for directory in [staging.blobs, staging.sha256, staging.tmp] { try FileSystem.makeDirectory(directory) }
            let listed = try await database.snapshot(to: staging.database)
            let counts = try await offload { () throws(GraftError) -> (linked: Int, copied: Int) in
                try Self.placeBlobs(listed, from: source, into: staging)
            }
            try FileSystem.syncDirectory(staging.root)
            try FileSystem.rename(staging.root, target.root)
            try FileSystem.syncDirectory(parent)
            return BackupResult(
                path: target.root, blobs: listed.count, bytes: listed.reduce(0) { $0 + $1.length }, linked: counts.linked,
                copied: counts.copied)
        } catch {
            try? FileManager.default.removeItem(atPath: staging.root)
            throw error
        }
    }

    /// Links (or, across file systems, copies) each blob into `staging`, then flushes every
    /// blob folder and the ones above.
    private static func placeBlobs(_ listed: [(digest: Digest, length: Int)], from source: RegistryLayout, into staging: RegistryLayout)
        throws(GraftError) -> (linked: Int, copied: Int)
    {
        var folders = Set<String>()
        var (linked, copied) = (0, 0)
        for (digest, length) in listed {
            let folder = staging.blobDirectory(digest)
            if folders.insert(folder).inserted { try FileSystem.makeDirectory(folder) }
            let (from, to) = (source.blobPath(digest), staging.blobPath(digest))
            if link(from, to) == 0 {
                linked += 1
                continue
            }
            let code = errno
            switch code {
            case ENOENT: throw .blobVanished(digest)
            case EXDEV, EPERM, EMLINK:
                let input = try FileDescriptor(path: from, flags: O_RDONLY)
                let output = try FileDescriptor(path: to, flags: O_WRONLY | O_CREAT | O_EXCL)
                try FileSystem.copy(from: input, to: output.fd, count: length, destination: to)
                try output.sync()
                guard fchmod(output.fd, 0o444) == 0 else { throw .fromErrno(errno, operation: "cannot make read-only", path: to) }
                copied += 1
            default:
                throw .fromErrno(code, operation: "cannot link \(from) to", path: to)
            }
        }
        for folder in folders.sorted() { try FileSystem.syncDirectory(folder) }
        try FileSystem.syncDirectory(staging.sha256)
        try FileSystem.syncDirectory(staging.blobs)
        return (linked, copied)
    }
}
