import COpenBLAS
import Foundation
public import GraftCore
import GraftLocal
import SafeTensors

#if canImport(Glibc)
    import Glibc
#endif

extension Registry {
    /// Writes an adapter checkpoint merged into its parent: the parent's model directory (its
    /// files and shards; `model.safetensors` for a parent kept as one file) with each weight
    /// the LoRA adapter targets replaced by W + scale·B·A in the weight's dtype — scale =
    /// alpha/r, or alpha/√r with rsLoRA; transposed weights (`fan_in_fan_out`) and embeddings as
    /// PEFT merges them — and each `modules_to_save` copy in place of the parent's module. What
    /// PEFT's `merge_and_unload()` then `save_pretrained` give, loadable by `from_pretrained`.
    ///
    /// Streamed one tensor at a time: untouched tensors are copied blob to file, each merged one
    /// is read, multiplied (OpenBLAS) and written; every blob read or copied is rehashed. Where
    /// the adapter names the parent's tensors under a prefix (`bert.`) or adds modules the
    /// parent lacks (a new head), the merged tensors take the adapter's names and the headers
    /// and index are rewritten; metadata the adapter's weights carry beyond `format` (the
    /// engine's architecture) replaces the parent's; otherwise every header is the parent's,
    /// byte for byte.
    ///
    /// - Throws: ``GraftError/cannotMerge(checkpoint:reason:)`` for a checkpoint that is not an
    ///   adapter's, an adapter type other than LoRA, DoRA, trained biases, or weights that are not
    ///   F32, BF16 or F16; ``GraftError/outputExists(path:)`` unless `overwrite`;
    ///   ``GraftError/damagedBlob(_:reason:)``.
    @discardableResult
    public func exportMerged(_ reference: Reference, to path: String, overwrite: Bool = false) async throws(GraftError) -> ExportResult {
        let (id, summary) = try await resolve(reference)
        if !overwrite, FileSystem.fileExists(path) { throw .outputExists(path: path) }
        guard let manifest = try await metadata.manifest(of: summary.model) ?? nil, manifest.mode == .adapter else {
            throw .cannotMerge(checkpoint: summary.ref, reason: "\(summary.model) is not an adapter student")
        }
        let adapter = try await metadata.parts(checkpoint: id)
        let adapterTensors = try Self.tensors(of: adapter.header, checkpoint: summary.ref)
        guard let configFile = adapter.files.first(where: { $0.path == AdapterConfig.fileName }),
            case .file(let digest, let length, let inline) = configFile.content
        else { throw .cannotMerge(checkpoint: summary.ref, reason: "it has no \(AdapterConfig.fileName)") }
        let config = try AdapterConfig.parse(try blobs.bytes(digest, length: length, inline: inline))
        if let problem = config.mergeProblem { throw .cannotMerge(checkpoint: summary.ref, reason: problem) }
        let (found, problems) = AdapterLayout.resolve(
            config, tensors: adapterTensors, parent: manifest.entries.filter { $0.state == .frozen })
        guard let layout = found else {
            throw .cannotMerge(checkpoint: summary.ref, reason: problems.map(\.description).joined(separator: "; "))
        }
        let (parentID, _) = try await resolve(try Reference(parsing: manifest.parent))
        let parent = try await metadata.parts(checkpoint: parentID)
        let plan = try MergePlan(
            layout: layout, adapter: adapter, adapterTensors: adapterTensors, parent: parent,
            parentTensors: try Self.tensors(of: parent.header, checkpoint: manifest.parent), checkpoint: summary.ref)
        var checked = parent.tensors + adapter.tensors
        for file in parent.files {
            if case .file(let digest, let length, let inline) = file.content { checked.append((digest, length, inline)) }
        }
        let blobs = self.blobs
        let (target, bytes) = try await writeTree(to: path, overwrite: overwrite, checking: checked) { root throws(GraftError) in
            try plan.write(into: root, blobs: blobs)
        }
        return ExportResult(checkpoint: summary.ref, digest: summary.digest, path: target, bytes: bytes, files: plan.files.count)
    }

    static func tensors(of header: [UInt8], checkpoint: String) throws(GraftError) -> [TensorInfo] {
        do { return try SafeTensorsHeader.parse(json: Array(header.dropFirst(8)), fileSize: nil).tensors } catch {
            throw .invalidFile(path: checkpoint, error)
        }
    }
}

/// What a merged export writes: the parent's files, each shard's tensors taken from the
/// parent, merged, or replaced by the adapter's copies.
struct MergePlan: Sendable {
    enum Source: Sendable {
        /// The parent's tensor (position in its data order), unchanged.
        case parent(Int)
        /// The parent's tensor with the layout's target merged in.
        case merged(Int, AdapterLayout.Target)
        /// The adapter's tensor (a module copy).
        case adapter(Int)
    }
    struct Item: Sendable {
        var source: Source
        var name: String
        var dtype: DType
        var shape: [Int]
    }
    enum File: Sendable {
        case shard(path: String, header: [UInt8], items: [Item])
        case blob(path: String, digest: Digest, length: Int, inline: [UInt8]?)
        case generated(path: String, bytes: [UInt8])
        var path: String {
            switch self {
            case .shard(let path, _, _), .blob(let path, _, _, _), .generated(let path, _): path
            }
        }
    }

    let files: [File]
    let parentParts: [(digest: Digest, length: Int, inline: [UInt8]?)]
    let adapterParts: [(digest: Digest, length: Int, inline: [UInt8]?)]
    let adapterTensors: [TensorInfo]
    /// Each adapter tensor's position, by name.
    let adapterIndex: [String: Int]
    let parentTensors: [TensorInfo]

    init(
        layout: AdapterLayout, adapter: CheckpointParts, adapterTensors: [TensorInfo], parent: CheckpointParts,
        parentTensors: [TensorInfo], checkpoint: String
    ) throws(GraftError) {
        (self.parentParts, self.adapterParts, self.adapterTensors, self.parentTensors) = (
            parent.tensors, adapter.tensors, adapterTensors, parentTensors
        )
        let adapterIndex = Dictionary(adapterTensors.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
        self.adapterIndex = adapterIndex
        let parentIndex = Dictionary(parentTensors.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
        let targets = Dictionary(layout.targets.map { ($0.parentTensor, $0) }, uniquingKeysWith: { first, _ in first })
        let mergeable: Set<DType> = [.f32, .bf16, .f16]
        for target in layout.targets {
            let weight = parentTensors[parentIndex[target.parentTensor]!]
            for (what, dtype) in [("weight \(target.parentTensor)", weight.dtype)]
                + [target.a, target.b].map({ ($0, adapterTensors[adapterIndex[$0]!].dtype) })
            where !mergeable.contains(dtype) {
                throw .cannotMerge(checkpoint: checkpoint, reason: "\(what) is \(dtype.rawValue); merging takes F32, BF16 or F16")
            }
        }
        // Module copies: in place of the parent's tensor of that name, or new.
        var replacing: [String: Int] = [:]
        var added: [Item] = []
        for copy in layout.copies {
            let index = adapterIndex[copy.tensor]!
            let info = adapterTensors[index]
            let item = Item(source: .adapter(index), name: copy.name, dtype: info.dtype, shape: info.shape)
            if copy.name.hasPrefix(layout.prefix), let parentName = Optional(String(copy.name.dropFirst(layout.prefix.count))),
                parentIndex[parentName] != nil
            {
                replacing[parentName] = index
            } else {
                added.append(item)
            }
        }
        func item(_ position: Int) -> Item {
            let tensor = parentTensors[position]
            let name = layout.prefix + tensor.name
            if let index = replacing[tensor.name] {
                let copy = adapterTensors[index]
                return Item(source: .adapter(index), name: name, dtype: copy.dtype, shape: copy.shape)
            }
            if let target = targets[tensor.name] {
                return Item(source: .merged(position, target), name: name, dtype: tensor.dtype, shape: tensor.shape)
            }
            return Item(source: .parent(position), name: name, dtype: tensor.dtype, shape: tensor.shape)
        }
        // The parent's shards (one file is `model.safetensors`), in path order.
        var shards: [(path: String, header: [UInt8], first: Int, count: Int)] = []
        var others: [CheckpointFile] = []
        if parent.files.isEmpty {
            shards = [("model.safetensors", parent.header, 0, parentTensors.count)]
        } else {
            for file in parent.files {
                if case .shard(let header, let first, let count) = file.content {
                    shards.append((file.path, header, first, count))
                } else {
                    others.append(file)
                }
            }
        }
        var items = shards.map { shard in (shard.first..<(shard.first + shard.count)).map(item) }
        if !added.isEmpty, !items.isEmpty { items[items.count - 1] += added }
        // Metadata the adapter's weights carry beyond `format` (the training engine's architecture)
        // describes the merged model: it replaces the parent's keys of the same name.
        var extraMetadata: [String: String] = [:]
        if let parsed = try? SafeTensorsHeader.parse(json: Array(adapter.header.dropFirst(8)), fileSize: nil) {
            for (key, value) in parsed.metadata ?? [] where key != "format" { extraMetadata[key] = value }
        }
        let reshaped = items.joined().contains { item in
            guard case .adapter = item.source, let position = parentIndex[String(item.name.dropFirst(layout.prefix.count))] else {
                return false
            }
            return parentTensors[position].shape != item.shape || parentTensors[position].dtype != item.dtype
        }
        let renamed = !layout.prefix.isEmpty || !added.isEmpty || !extraMetadata.isEmpty || reshaped
        var files: [File] = []
        var weightMap: [String: String] = [:]
        var totalSize = 0
        for (shard, shardItems) in zip(shards, items) {
            var header = shard.header
            if renamed {
                let metadata: [String: String]?
                do {
                    let parsed = try SafeTensorsHeader.parse(json: Array(shard.header.dropFirst(8)), fileSize: nil)
                    var merged = Dictionary((parsed.metadata ?? []).map { ($0.key, $0.value) }, uniquingKeysWith: { first, _ in first })
                    merged.merge(extraMetadata) { _, adapter in adapter }
                    metadata = merged.isEmpty ? nil : merged
                    header = try SafeTensorsWriter.header(inOrder: shardItems.map { ($0.name, $0.dtype, $0.shape) }, metadata: metadata)
                } catch { throw .invalidFile(path: shard.path, error) }
            }
            for item in shardItems {
                weightMap[item.name] = shard.path.split(separator: "/").last.map(String.init)
                totalSize += (try? item.dtype.byteCount(of: item.shape, tensor: item.name)) ?? 0
            }
            files.append(.shard(path: shard.path, header: header, items: shardItems))
        }
        for file in others {
            guard case .file(let digest, let length, let inline) = file.content else { continue }
            if renamed, file.path.hasSuffix(".safetensors.index.json") {
                files.append(.generated(path: file.path, bytes: Self.index(weightMap, totalSize: totalSize)))
            } else {
                files.append(.blob(path: file.path, digest: digest, length: length, inline: inline))
            }
        }
        self.files = files.sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
    }

    /// A sharded model's index as `save_pretrained` writes it.
    static func index(_ weightMap: [String: String], totalSize: Int) -> [UInt8] {
        let object: [String: Any] = ["metadata": ["total_size": totalSize], "weight_map": weightMap]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data()
        return Array(data) + [UInt8(ascii: "\n")]
    }

    /// Writes every file under `root` (created), each flushed, folders flushed after. Blobs are
    /// read here without hashing: `Registry.writeTree` rehashes every one of them in parallel and
    /// keeps nothing written from a damaged store.
    func write(into root: String, blobs: BlobTransfer) throws(GraftError) -> Int {
        try FileSystem.makeDirectory(root, mode: 0o755)
        var folders: [String] = [root]
        var written = 0
        for file in files {
            if let problem = DirectoryInput.pathProblem(file.path) {
                throw GraftError.io(
                    operation: "refusing to write \(file.path.debugDescription) (\(problem)) under", path: root, errno: EINVAL)
            }
            var folder = root
            for component in file.path.split(separator: "/").dropLast() {
                folder += "/" + component
                if try FileSystem.makeDirectory(folder, mode: 0o755) { folders.append(folder) }
            }
            let out = try FileDescriptor(path: root + "/" + file.path, flags: O_WRONLY | O_CREAT | O_EXCL)
            switch file {
            case .shard(_, let header, let items):
                try out.write(header)
                written += header.count
                for item in items {
                    switch item.source {
                    case .parent(let position):
                        let (digest, length, inline) = parentParts[position]
                        if let inline { try out.write(inline) } else { try blobs.append(digest, length: length, to: out) }
                        written += length
                    case .adapter(let index):
                        let (digest, length, inline) = adapterParts[index]
                        try out.write(try blobs.bytes(digest, length: length, inline: inline, verify: false))
                        written += length
                    case .merged(let position, let target):
                        let bytes = try merged(position, target, blobs: blobs)
                        try out.write(bytes)
                        written += bytes.count
                    }
                }
            case .blob(_, let digest, let length, let inline):
                if let inline { try out.write(inline) } else { try blobs.append(digest, length: length, to: out) }
                written += length
            case .generated(_, let bytes):
                try out.write(bytes)
                written += bytes.count
            }
            try out.sync()
        }
        for folder in folders.reversed() { try FileSystem.syncDirectory(folder) }
        return written
    }

    /// The parent's weight at `position` with the target's B·A added, as PEFT merges: the
    /// product in float32, times the scale, rounded to the adapter's dtype, then added to the
    /// weight in float32 and rounded to the weight's dtype.
    func merged(_ position: Int, _ target: AdapterLayout.Target, blobs: BlobTransfer) throws(GraftError) -> [UInt8] {
        let weight = parentTensors[position]
        let (wd, wl, wi) = parentParts[position]
        let (ai, bi) = (adapterIndex[target.a]!, adapterIndex[target.b]!)
        let a = Self.floats(
            try blobs.bytes(adapterParts[ai].digest, length: adapterParts[ai].length, inline: adapterParts[ai].inline, verify: false),
            adapterTensors[ai].dtype)
        let b = Self.floats(
            try blobs.bytes(adapterParts[bi].digest, length: adapterParts[bi].length, inline: adapterParts[bi].inline, verify: false),
            adapterTensors[bi].dtype)
        var w = Self.floats(try blobs.bytes(wd, length: wl, inline: wi, verify: false), weight.dtype)
        let rank = target.rank
        let columns = a.count / rank  // A is rank × columns (in, or in·kh·kw, or the vocabulary)
        let rows = b.count / rank  // B is rows × rank
        var delta = [Float](repeating: 0, count: rows * columns)
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                delta.withUnsafeMutableBufferPointer { c in
                    cblas_sgemm(
                        CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(rows), blasint(columns), blasint(rank), 1, b.baseAddress,
                        blasint(rank), a.baseAddress, blasint(columns), 0, c.baseAddress, blasint(columns))
                }
            }
        }
        let scale = Float(target.scale)
        let transposed = target.transposed || target.kind == .embedding
        // PEFT rounds the update to the adapter's dtype (B's), then adds it to the weight.
        delta.withUnsafeMutableBufferPointer { d in
            for i in d.indices { d[i] *= scale }
            Self.round(d, to: adapterTensors[bi].dtype)
        }
        w.withUnsafeMutableBufferPointer { w in
            delta.withUnsafeBufferPointer { d in
                if transposed {
                    for row in 0..<rows { for column in 0..<columns { w[column * rows + row] += d[row * columns + column] } }
                } else {
                    for i in d.indices { w[i] += d[i] }
                }
            }
            Self.round(w, to: weight.dtype)
        }
        return Self.bytes(w, weight.dtype)
    }

    static func floats(_ bytes: [UInt8], _ dtype: DType) -> [Float] {
        bytes.withUnsafeBytes { raw in
            switch dtype {
            case .bf16: return raw.bindMemory(to: UInt16.self).map { Float(bitPattern: UInt32(UInt16(littleEndian: $0)) << 16) }
            case .f16: return raw.bindMemory(to: UInt16.self).map { Float(Float16(bitPattern: UInt16(littleEndian: $0))) }
            default: return raw.bindMemory(to: UInt32.self).map { Float(bitPattern: UInt32(littleEndian: $0)) }
            }
        }
    }

    /// Rounds float32 values in place to the nearest values of `dtype` (ties to even).
    static func round(_ values: UnsafeMutableBufferPointer<Float>, to dtype: DType) {
        switch dtype {
        case .bf16: for i in values.indices { values[i] = Float(bitPattern: UInt32(bf16(values[i])) << 16) }
        case .f16: for i in values.indices { values[i] = Float(Float16(values[i])) }
        default: break
        }
    }

    static func bf16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(bits >> 16) | 0x40 }
        return UInt16((bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }

    static func bytes(_ values: [Float], _ dtype: DType) -> [UInt8] {
        switch dtype {
        case .bf16:
            return values.map { bf16($0).littleEndian }.withUnsafeBytes { Array($0) }
        case .f16:
            return values.map { Float16($0).bitPattern.littleEndian }.withUnsafeBytes { Array($0) }
        default:
            return values.map { $0.bitPattern.littleEndian }.withUnsafeBytes { Array($0) }
        }
    }
}

/// A merged export from any registry (``RegistryAPI``): a local one merges from its blobs
/// (``Registry/exportMerged(_:to:overwrite:)``); a remote one has the adapter and its parent
/// downloaded (every byte checked against its digest) into a scratch registry beside `path`,
/// merged there the same way, and the scratch removed — it takes the parent's size again on disk
/// while it runs.
public enum MergedExport {
    /// - Throws: as ``Registry/exportMerged(_:to:overwrite:)``, and the download's errors.
    @discardableResult
    public static func export(from registry: any RegistryAPI, _ reference: Reference, to path: String, overwrite: Bool = false)
        async throws(GraftError) -> ExportResult
    {
        if let local = registry as? Registry { return try await local.exportMerged(reference, to: path, overwrite: overwrite) }
        let summary = try await registry.checkpoint(reference).checkpoint
        if !overwrite, FileSystem.fileExists(path) { throw .outputExists(path: path) }
        guard let manifest = try await registry.manifest(of: summary.model), manifest.mode == .adapter else {
            throw .cannotMerge(checkpoint: summary.ref, reason: "\(summary.model) is not an adapter student")
        }
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        let folder = trimmed.contains("/") ? String(trimmed[..<trimmed.lastIndex(of: "/")!]) : "."
        let scratch = (folder.isEmpty ? "" : folder + "/") + "." + FileSystem.uniqueName(suffix: ".merge")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try FileSystem.makeDirectory(scratch, mode: 0o700)
        let parentPath = scratch + "/parent", adapterPath = scratch + "/adapter"
        _ = try await registry.export(try Reference(parsing: manifest.parent), to: parentPath, overwrite: false)
        _ = try await registry.export(summary.reference, to: adapterPath, overwrite: false)
        let local = try await Registry.create(at: scratch + "/registry").registry
        let (parent, adapter) = (try ModelName("parent"), try ModelName("adapter"))
        if DirectoryInput.isDirectory(parentPath) {
            _ = try await local.addBase(name: parent, directory: try DirectoryInput.open(parentPath))
        } else {
            _ = try await local.addBase(name: parent, file: parentPath)
        }
        _ = try await local.createStudent(name: adapter, from: .number(parent, 1), manifest: .adapter)
        _ = try await local.addCheckpoint(model: adapter, directory: try DirectoryInput.open(adapterPath))
        var result = try await local.exportMerged(.number(adapter, 1), to: path, overwrite: overwrite)
        (result.checkpoint, result.digest) = (summary.ref, summary.digest)
        return result
    }
}
