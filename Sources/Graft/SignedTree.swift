import Crypto
import Foundation
public import GraftCore
import GraftLocal
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A model on disk checked against an OpenSSF model signature as the reference verifier checks
/// it (`model_signing verify key`): every regular file under the directory — or the one file,
/// named `.` — hashed with SHA-256, the signature's `ignore_paths`, `.git*` and the signature
/// itself left out, a symlink refused unless the signature allows them.
public enum SignedTree {
    /// Verifies `model` (a directory or a file) with the signature at `signaturePath`.
    /// - Throws: ``GraftError/invalidSignature(_:problems:)`` naming a key mismatch, an altered
    ///   bundle, or every extra, missing and changed file; ``GraftError/notSigned(_:)`` when the
    ///   signature file is missing.
    public static func verify(_ model: String, signature signaturePath: String, key: VerifyingKey) async throws(GraftError)
        -> SignatureVerification
    {
        let bytes = try readSignature(signaturePath, model: model)
        let signature = try ModelSignature.parse(bytes, origin: signaturePath)
        try signature.verify(with: key, origin: model)
        let actual = try await offload { () throws(GraftError) in
            try resources(of: model, signature: signature, signaturePath: signaturePath)
        }
        try signature.checkFiles(actual.resources, problems: actual.problems, origin: model)
        return SignatureVerification(subject: model, key: key, signature: signature)
    }

    /// Where a model's signature is by default: `DIR/model.sig`, or `FILE.sig` beside a file.
    public static func defaultSignaturePath(for model: String) -> String {
        let trimmed = model.count > 1 && model.hasSuffix("/") ? String(model.dropLast()) : model
        return FileSystem.isDirectory(trimmed) ? trimmed + "/" + ModelSignature.fileName : trimmed + ".sig"
    }

    static func readSignature(_ path: String, model: String) throws(GraftError) -> [UInt8] {
        guard FileSystem.fileExists(path) else { throw .notSigned("\(model) (no signature at \(path))") }
        guard let size = try FileSystem.fileSize(path), size <= ModelSignature.maximumBytes else {
            throw .invalidSignature(path, problems: ["it is over \(ModelSignature.maximumBytes >> 20) MiB"])
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .cannotReadInput(path: path, .io(operation: "cannot read", path: path, errno: EIO))
        }
        return Array(data)
    }

    /// The files the reference would hash, with their digests, and what it would refuse.
    static func resources(of model: String, signature: ModelSignature, signaturePath: String) throws(GraftError)
        -> (resources: [SignedResource], problems: [String])
    {
        let root = model.count > 1 && model.hasSuffix("/") ? String(model.dropLast()) : model
        guard FileSystem.isDirectory(root) else {
            guard FileSystem.fileExists(root) else {
                throw .cannotReadInput(path: root, .io(operation: "no such file", path: root, errno: ENOENT))
            }
            return ([SignedResource(name: ".", digest: try hashFile(root))], [])
        }
        let ownSignature = ModelDirectoryPaths.relative(signaturePath, to: root)
        var files: [(name: String, path: String, size: Int)] = []
        var problems: [String] = []
        func visit(_ relative: String, depth: Int) throws(GraftError) {
            // A signature that allows symlinks could lead the walk round a loop: bounded.
            guard depth <= 64 else {
                problems.append("\(relative.debugDescription) nests deeper than 64 folders (a symlink loop?)")
                return
            }
            let directory = relative.isEmpty ? root : root + "/" + relative
            for name in try FileSystem.contentsOfDirectory(directory).sorted() {
                let path = relative.isEmpty ? name : relative + "/" + name
                if signature.ignores(path) || path == ownSignature { continue }
                let absolute = directory + "/" + name
                var info = stat()
                guard lstat(absolute, &info) == 0 else { throw .fromErrno(errno, operation: "cannot stat", path: absolute) }
                var mode = info.st_mode & S_IFMT
                if mode == S_IFLNK {
                    guard signature.allowSymlinks else {
                        problems.append("symlink \(path.debugDescription) (the signature does not allow symlinks)")
                        continue
                    }
                    guard stat(absolute, &info) == 0 else {
                        problems.append("symlink \(path.debugDescription) points at nothing")
                        continue
                    }
                    mode = info.st_mode & S_IFMT
                }
                switch mode {
                case S_IFDIR: try visit(path, depth: depth + 1)
                case S_IFREG: files.append((path, absolute, Int(info.st_size)))
                default: problems.append("\(path.debugDescription) is not a regular file or a folder")
                }
            }
        }
        try visit("", depth: 0)
        // Two lanes, balanced by size: hashing is the cost.
        let lanes = BlobTransfer.balance(files.map(\.size))
        let digests = Mutex<[Int: GraftCore.Digest]>([:])
        let failure = Mutex<GraftError?>(nil)
        let list = files
        DispatchQueue.concurrentPerform(iterations: lanes.count) { lane in
            for index in lanes[lane] {
                do throws(GraftError) {
                    let digest = try hashFile(list[index].path)
                    digests.withLock { $0[index] = digest }
                } catch {
                    failure.withLock { if $0 == nil { $0 = error } }
                    return
                }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
        let hashed = digests.withLock { $0 }
        return (files.indices.map { SignedResource(name: files[$0].name, digest: hashed[$0]!) }, problems)
    }

    /// A file's SHA-256, read in 4 MiB chunks.
    static func hashFile(_ path: String) throws(GraftError) -> GraftCore.Digest {
        let file = try FileDescriptor(path: path, flags: O_RDONLY)
        let size = try FileSystem.fileSize(path) ?? 0
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlobTransfer.chunkSize, alignment: 64)
        defer { buffer.deallocate() }
        var hasher = SHA256()
        var offset = 0
        while offset < size {
            let count = min(BlobTransfer.chunkSize, size - offset)
            try file.read(into: buffer, count: count, offset: offset)
            hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buffer, count: count))
            offset += count
        }
        return GraftCore.Digest(bytes: hasher.finalize())
    }
}

enum ModelDirectoryPaths {
    /// `path` relative to `root` when it lies under it (compared as given and resolved), else `nil`.
    static func relative(_ path: String, to root: String) -> String? {
        let resolvedRoot = URL(fileURLWithPath: root).standardizedFileURL.resolvingSymlinksInPath().path
        let resolved = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        guard resolved.hasPrefix(resolvedRoot + "/") else { return nil }
        return String(resolved.dropFirst(resolvedRoot.count + 1))
    }
}

/// Writing a checkpoint's signature beside its export.
public enum SignedExport {
    /// Writes `bundle` as `model.sig` inside an exported directory, or as `FILE.sig` beside an
    /// exported file: written beside under a temporary name, flushed, renamed into place (an
    /// older one is replaced). Returns the path written.
    public static func write(_ bundle: [UInt8], besideExport path: String, directory: Bool) throws(GraftError) -> String {
        let target = directory ? path + "/" + ModelSignature.fileName : path + ".sig"
        let folder = directory ? path : FileSystem.parentAndName(path).parent
        let temporary = folder + "/." + FileSystem.uniqueName(suffix: ".sig.tmp")
        do throws(GraftError) {
            let out = try FileDescriptor(path: temporary, flags: O_WRONLY | O_CREAT | O_EXCL)
            try out.write(bundle)
            try out.sync()
            try FileSystem.rename(temporary, target)
        } catch {
            FileSystem.remove(temporary)
            throw error
        }
        try FileSystem.syncDirectory(folder)
        return target
    }
}
