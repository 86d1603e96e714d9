import Foundation
package import GraftCore
import SafeTensors

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads a model directory for import (``DirectoryInput``): a Hugging Face `save_pretrained`
/// directory, a sentence-transformers directory, or a Hugging Face cache snapshot.
///
/// Everything is checked before anything is read for storage, and a refusal names the path and
/// the reason (``GraftError/invalidDirectory(path:reason:)``):
///
/// - pickled weights (`*.bin`, `*.pt`, `*.pth`, `*.ckpt`, `*.pkl`, `*.pickle`) are never
///   loaded: convert them to safetensors, or exclude them;
/// - a symlink must resolve to a regular file inside the directory — or, for a cache snapshot
///   (`…/models--ORG--NAME/snapshots/REV`), inside the cache's `blobs/` beside it; symlinks to
///   directories, device files, sockets and FIFOs are refused;
/// - a `*.safetensors.index.json` must name shards that exist, every tensor in the shard it
///   says, and nothing else; no tensor may be in two files; a file named like a shard
///   (`model-00001-of-00004.safetensors`) needs its index;
/// - a directory with no safetensors weights is refused, and so are more files than
///   ``DirectoryOptions/maxFiles`` or a plain file over ``DirectoryOptions/maxFileBytes``.
///
/// Entries whose name starts with `.` (`.git`, `.cache`, `.gitattributes`) are not model files
/// and are left out, as are paths ``DirectoryOptions/exclude`` matches.
package enum ModelDirectory {
    /// Extensions of pickle-based files, refused (never unpickled).
    static let pickled = [".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"]
    /// How deep subfolders may nest.
    static let maximumDepth = 16

    /// Whether `path` is a directory (following a symlink): the CLI's switch between a file and
    /// a directory import.
    package static func isDirectory(_ path: String) -> Bool { FileSystem.isDirectory(path) }

    package static func open(_ path: String, options: DirectoryOptions = DirectoryOptions()) throws(GraftError) -> DirectoryInput {
        func refuse(_ reason: String) -> GraftError { .invalidDirectory(path: path, reason: reason) }
        guard let root = realPath(path), FileSystem.isDirectory(root) else { throw refuse("not a directory") }
        let walk = try Walk(root: root, options: options, refuse: refuse)
        // A top-level `model.sig` is the directory's OpenSSF signature, not one of its files: it
        // is kept with the checkpoint (byte for byte) and written back beside them on export.
        var signature: [UInt8]? = nil
        if let entry = walk.entries.first(where: { $0.path == ModelSignature.fileName }) {
            guard entry.size <= ModelSignature.maximumBytes else {
                throw refuse(
                    "its \(ModelSignature.fileName) is \(entry.size) bytes; a signature is at most \(ModelSignature.maximumBytes >> 20) MiB"
                )
            }
            var bytes = [UInt8](repeating: 0, count: entry.size)
            let file = try FileDescriptor(path: entry.absolute, flags: O_RDONLY)
            let read = bytes.withUnsafeMutableBytes { raw in
                Result { () throws(GraftError) in if entry.size > 0 { try file.read(into: raw.baseAddress!, count: entry.size, offset: 0) }
                }
            }
            try read.get()
            signature = bytes
        }
        let entries = walk.entries.filter { $0.path != ModelSignature.fileName }
        let weights = entries.filter { $0.path.hasSuffix(".safetensors") }
        guard !weights.isEmpty else {
            throw refuse("it holds no safetensors weights (a model directory has model.safetensors, or shards and their index)")
        }
        let files = entries.filter { !$0.path.hasSuffix(".safetensors") }
        if let big = files.first(where: { $0.size > options.maxFileBytes }) {
            throw refuse("\(big.path) is \(big.size) bytes; files other than weights may be at most \(options.maxFileBytes)")
        }
        var readers: [(path: String, reader: SafeTensorsReader)] = []
        for entry in weights {
            do { readers.append((entry.path, try SafeTensorsReader(path: entry.absolute))) } catch {
                if case .io = error { throw .cannotReadInput(path: entry.absolute, error) }
                throw .invalidFile(path: entry.absolute, error)
            }
        }
        try checkShards(readers, indexes: files.filter { $0.path.hasSuffix(".safetensors.index.json") }, refuse: refuse)
        let input: any SafeTensorsInput =
            readers.count == 1 ? readers[0].reader : try ShardedInput(origin: path, shards: readers.map(\.reader))
        return DirectoryInput(
            origin: path, weights: input,
            shards: readers.map { .init(path: $0.path, headerBytes: $0.reader.headerBytes, tensorCount: $0.reader.header.tensors.count) },
            files: try FilesInput(origin: path, files: files.map { ($0.path, $0.absolute, $0.size) }), signature: signature)
    }

    /// Why a single file given for import should be a directory: one shard of a sharded model,
    /// or a sharded model's index. `nil` for any other file.
    package static func shardAdvice(file path: String) -> String? {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        if name.hasSuffix(".safetensors.index.json") {
            return "\(name) is the index of a sharded model: register the directory that holds it and its shards"
        }
        if let (number, total) = shardNumber(name) {
            return "\(name) is shard \(number) of \(total) of a sharded model: register the directory that holds every shard and the index"
        }
        return nil
    }

    /// `model-00002-of-00004.safetensors` → (2, 4).
    static func shardNumber(_ name: String) -> (Int, Int)? {
        guard name.hasSuffix(".safetensors") else { return nil }
        let stem = name.dropLast(".safetensors".count)
        let parts = stem.split(separator: "-")
        guard parts.count >= 4, parts[parts.count - 2] == "of", let number = Int(parts[parts.count - 3]), let total = Int(parts.last!),
            parts[parts.count - 3].allSatisfy(\.isNumber), parts.last!.allSatisfy(\.isNumber), number >= 1, number <= total
        else { return nil }
        return (number, total)
    }

    /// The index files against the shards: every named shard exists and holds exactly the
    /// tensors the index gives it; no tensor is in two files; shard-named files have an index.
    static func checkShards(
        _ readers: [(path: String, reader: SafeTensorsReader)], indexes: [Entry], refuse: (String) -> GraftError
    ) throws(GraftError) {
        var owner: [String: String] = [:]
        for (path, reader) in readers {
            for tensor in reader.header.tensors {
                if let other = owner.updateValue(path, forKey: tensor.name) {
                    throw refuse("tensor \(tensor.name) is in two files, \(other) and \(path)")
                }
            }
        }
        var indexed = Set<String>()
        for index in indexes {
            let directory = index.path.contains("/") ? String(index.path[..<index.path.lastIndex(of: "/")!]) + "/" : ""
            guard let data = FileManager.default.contents(atPath: index.absolute),
                let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let map = object["weight_map"] as? [String: Any]
            else { throw refuse("\(index.path) is not a safetensors index (a JSON object with a weight_map)") }
            var named: [String: Set<String>] = [:]
            for (tensor, value) in map {
                guard let shard = value as? String, !shard.isEmpty, !shard.hasPrefix("/"), !shard.split(separator: "/").contains("..")
                else {
                    throw refuse("\(index.path) maps tensor \(tensor) to a shard that is not a plain relative path")
                }
                named[directory + shard, default: []].insert(tensor)
            }
            for (shard, tensors) in named.sorted(by: { $0.key < $1.key }) {
                guard let reader = readers.first(where: { $0.path == shard })?.reader else {
                    throw refuse("\(index.path) names shard \(shard), which is missing")
                }
                if let stray = tensors.subtracting(reader.header.tensors.map(\.name)).sorted().first {
                    throw refuse("\(index.path) puts tensor \(stray) in \(shard), which does not hold it")
                }
            }
            for (shard, tensors) in named.sorted(by: { $0.key < $1.key }) {
                let held = readers.first(where: { $0.path == shard })!.reader.header.tensors.map(\.name)
                if let unlisted = Set(held).subtracting(tensors).sorted().first {
                    throw refuse("\(shard) holds tensor \(unlisted), which \(index.path) does not list")
                }
                indexed.insert(shard)
            }
        }
        for (path, _) in readers where !indexed.contains(path) {
            let name = path.split(separator: "/").last.map(String.init) ?? path
            if let (number, total) = shardNumber(name) {
                throw refuse("\(path) is shard \(number) of \(total), but no *.safetensors.index.json beside it names it")
            }
        }
    }

    /// A file to import: its relative path, where its bytes are (a symlink resolved) and its size.
    struct Entry {
        var path: String
        var absolute: String
        var size: Int
    }

    /// The walk over the directory: every file, checked, by relative path.
    struct Walk {
        var entries: [Entry] = []
        let root: String
        /// For a cache snapshot: the cache's `blobs/` directory, which its symlinks point into.
        let cacheBlobs: String?
        let options: DirectoryOptions

        init(root: String, options: DirectoryOptions, refuse: (String) -> GraftError) throws(GraftError) {
            self.root = root
            self.options = options
            let parts = root.split(separator: "/")
            if parts.count >= 3, parts[parts.count - 2] == "snapshots", parts[parts.count - 3].hasPrefix("models--") {
                cacheBlobs = "/" + parts.dropLast(2).joined(separator: "/") + "/blobs"
            } else {
                cacheBlobs = nil
            }
            try visit("", depth: 0, refuse: refuse)
            entries.sort { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
        }

        mutating func visit(_ relative: String, depth: Int, refuse: (String) -> GraftError) throws(GraftError) {
            guard depth <= ModelDirectory.maximumDepth else {
                throw refuse("\(relative) nests deeper than \(ModelDirectory.maximumDepth) folders")
            }
            let directory = relative.isEmpty ? root : root + "/" + relative
            for name in try ModelDirectory.names(in: directory, refuse: refuse) where !name.hasPrefix(".") {
                let path = relative.isEmpty ? name : relative + "/" + name
                if options.excludes(path) { continue }
                if let problem = DirectoryInput.pathProblem(path) { throw refuse("the name \(path.debugDescription) has \(problem)") }
                let absolute = directory + "/" + name
                var info = stat()
                guard lstat(absolute, &info) == 0 else { throw .fromErrno(errno, operation: "cannot stat", path: absolute) }
                switch info.st_mode & S_IFMT {
                case S_IFDIR:
                    try visit(path, depth: depth + 1, refuse: refuse)
                    continue
                case S_IFREG:
                    try add(Entry(path: path, absolute: absolute, size: Int(info.st_size)), refuse: refuse)
                case S_IFLNK:
                    guard let target = ModelDirectory.realPath(absolute) else {
                        throw refuse("the symlink \(path) points at nothing")
                    }
                    let inside = target.hasPrefix(root + "/") || cacheBlobs.map { target.hasPrefix($0 + "/") } == true
                    guard inside else { throw refuse("the symlink \(path) leaves the directory (it points at \(target))") }
                    var resolved = stat()
                    guard stat(target, &resolved) == 0, resolved.st_mode & S_IFMT == S_IFREG else {
                        throw refuse("the symlink \(path) points at something that is not a regular file")
                    }
                    try add(Entry(path: path, absolute: target, size: Int(resolved.st_size)), refuse: refuse)
                default:
                    throw refuse("\(path) is not a regular file or a folder (a device, socket or FIFO)")
                }
            }
        }

        mutating func add(_ entry: Entry, refuse: (String) -> GraftError) throws(GraftError) {
            let lower = entry.path.lowercased()
            if let pickle = ModelDirectory.pickled.first(where: { lower.hasSuffix($0) }) {
                throw refuse(
                    "\(entry.path) is a pickle-based file (\(pickle)), which Graft never loads: convert weights to safetensors with the "
                        + "reference safetensors tools (safetensors.torch.save_file), or leave the file out")
            }
            entries.append(entry)
            guard entries.count <= options.maxFiles else { throw refuse("it holds more than \(options.maxFiles) files") }
        }
    }

    /// The names in a directory (not `.` or `..`), as valid UTF-8.
    static func names(in directory: String, refuse: (String) -> GraftError) throws(GraftError) -> [String] {
        guard let handle = opendir(directory) else { throw .fromErrno(errno, operation: "cannot list", path: directory) }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let bytes = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
            guard let name = String(validating: bytes, as: UTF8.self) else {
                throw refuse("a name in \(directory) is not valid UTF-8")
            }
            if name != ".", name != ".." { names.append(name) }
        }
        return names
    }

    /// The canonical absolute path (symlinks resolved), or `nil` when it does not resolve.
    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// Several safetensors shards read as one file: tensors in shard order, each shard's in its data
/// order, under a header laid out for that order (``SafeTensorsWriter/header(inOrder:metadata:)``,
/// the first shard's metadata). Reads go to the shard that holds the tensor.
final class ShardedInput: SafeTensorsInput {
    let origin: String
    let header: SafeTensorsHeader
    let headerBytes: [UInt8]
    let fileSize: Int
    private let shards: [SafeTensorsReader]
    /// For each tensor name: its shard and its place there.
    private let location: [String: (shard: Int, info: TensorInfo)]

    init(origin: String, shards: [SafeTensorsReader]) throws(GraftError) {
        let all = shards.enumerated().flatMap { index, shard in shard.header.tensors.map { (index, $0) } }
        do {
            let bytes = try DirectoryInput.combinedHeader(shards.map(\.header))
            let dataLength = all.reduce(0) { $0 + $1.1.byteCount }
            let length = try SafeTensorsHeader.headerLength(prefix: Array(bytes.prefix(8)), fileSize: bytes.count + dataLength)
            header = try SafeTensorsHeader.parse(json: Array(bytes[8..<(8 + length)]), fileSize: bytes.count + dataLength)
            (headerBytes, fileSize) = (bytes, bytes.count + dataLength)
        } catch {
            throw .invalidDirectory(path: origin, reason: "its shards cannot be read as one set of tensors: \(error)")
        }
        self.origin = origin
        self.shards = shards
        location = Dictionary(all.map { ($0.1.name, (shard: $0.0, info: $0.1)) }, uniquingKeysWith: { first, _ in first })
    }

    func read(_ tensor: TensorInfo, at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws(SafeTensorsError) {
        guard let (shard, info) = location[tensor.name] else {
            throw .io(operation: "no tensor \(tensor.name) in", path: origin, errno: EINVAL)
        }
        try shards[shard].read(info, at: offset, count: count, into: buffer)
    }
}

/// A directory's plain files as one input whose "tensors" are the files (U8, shape [length],
/// named by relative path, in path order), so that the registry's blob transfer ingests them
/// as it ingests tensors: hashed, deduplicated, small ones inline.
final class FilesInput: SafeTensorsInput {
    let origin: String
    let header: SafeTensorsHeader
    let headerBytes: [UInt8]
    let fileSize: Int
    /// Where each file's bytes are, by name.
    private let paths: [String: String]

    init(origin: String, files: [(path: String, absolute: String, size: Int)]) throws(GraftError) {
        do {
            let bytes = try SafeTensorsWriter.header(inOrder: files.map { ($0.path, DType.u8, [$0.size]) }, metadata: nil)
            let total = bytes.count + files.reduce(0) { $0 + $1.size }
            let length = try SafeTensorsHeader.headerLength(prefix: Array(bytes.prefix(8)), fileSize: total)
            header = try SafeTensorsHeader.parse(json: Array(bytes[8..<(8 + length)]), fileSize: total)
            (headerBytes, fileSize) = (bytes, total)
        } catch {
            throw .invalidDirectory(path: origin, reason: "its file list cannot be read: \(error)")
        }
        self.origin = origin
        paths = Dictionary(files.map { ($0.path, $0.absolute) }, uniquingKeysWith: { first, _ in first })
    }

    func read(_ tensor: TensorInfo, at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws(SafeTensorsError) {
        guard let path = paths[tensor.name] else { throw .io(operation: "no file \(tensor.name) in", path: origin, errno: EINVAL) }
        // Not through a symlink planted since the walk: the walk resolved every link it accepted.
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw .io(operation: "cannot open", path: path, errno: errno) }
        defer { close(fd) }
        switch preadFully(fd, buffer, count: count, offset: offset) {
        case .success(let n) where n == count: return
        case .success: throw .io(operation: "file shrank while reading", path: path, errno: EIO)
        case .failure(let failure): throw .io(operation: "cannot read", path: path, errno: failure.code)
        }
    }
}
