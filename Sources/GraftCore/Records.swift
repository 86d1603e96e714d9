public import SafeTensors

/// Where a pretrained base comes from. Every field is optional.
public struct Provenance: Sendable, Codable, Equatable {
    /// Where the weights were obtained (a URL or a description).
    public var source: String?
    /// License identifier, e.g. `apache-2.0`.
    public var license: String?
    /// The pretraining dataset.
    public var dataset: String?
    /// The architecture, e.g. `resnet18`.
    public var architecture: String?
    /// The task the base was trained for.
    public var task: String?
    public var description: String?
    /// Free-form key/value metadata.
    public var metadata: [String: String]

    public init(
        source: String? = nil, license: String? = nil, dataset: String? = nil, architecture: String? = nil,
        task: String? = nil, description: String? = nil, metadata: [String: String] = [:]
    ) {
        self.source = source
        self.license = license
        self.dataset = dataset
        self.architecture = architecture
        self.task = task
        self.description = description
        self.metadata = metadata
    }

    /// Every field as ``FreeText``.
    /// - Throws: ``GraftError/invalidText(what:reason:)`` naming the first field that is not.
    public func check() throws(GraftError) {
        for (field, value) in [
            ("source", source), ("license", license), ("dataset", dataset), ("architecture", architecture), ("task", task),
            ("description", description),
        ] {
            try FreeText.check(value, what: "provenance \(field)")
        }
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            try FreeText.check(key, what: "provenance metadata key")
            try FreeText.check(value, what: "provenance metadata \(key)")
        }
    }

    private enum CodingKeys: String, CodingKey { case source, license, dataset, architecture, task, description, metadata }

    /// Every key may be absent (a client sends only what it knows); `metadata` then is empty.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            source: try container.decodeIfPresent(String.self, forKey: .source),
            license: try container.decodeIfPresent(String.self, forKey: .license),
            dataset: try container.decodeIfPresent(String.self, forKey: .dataset),
            architecture: try container.decodeIfPresent(String.self, forKey: .architecture),
            task: try container.decodeIfPresent(String.self, forKey: .task),
            description: try container.decodeIfPresent(String.self, forKey: .description),
            metadata: try container.decodeIfPresent([String: String].self, forKey: .metadata) ?? [:])
    }
}

/// A model as listed: a base (with provenance) or a student.
public struct ModelSummary: Sendable, Codable, Equatable {
    public var name: ModelName
    /// `base` or `student`.
    public var kind: String
    public var provenance: Provenance
    public var checkpointCount: Int
    /// The newest checkpoint's number, if any.
    public var latestCheckpoint: Int?
    public var createdAt: String

    package init(
        name: ModelName, kind: String, provenance: Provenance, checkpointCount: Int, latestCheckpoint: Int? = nil, createdAt: String
    ) {
        self.name = name
        self.kind = kind
        self.provenance = provenance
        self.checkpointCount = checkpointCount
        self.latestCheckpoint = latestCheckpoint
        self.createdAt = createdAt
    }
}

/// A checkpoint without its tensors.
public struct CheckpointSummary: Sendable, Codable, Equatable {
    public var model: ModelName
    public var number: Int
    /// This checkpoint as a typed reference (`NAME@N`), to pass back to the registry.
    public var reference: Reference { .number(model, number) }
    /// `NAME@N`.
    public var ref: String
    public var digest: Digest
    public var tensorCount: Int
    public var parameterCount: Int
    /// Size of the checkpoint as a safetensors file (its logical size).
    public var fileBytes: Int
    public var step: Int?
    public var epoch: Int?
    /// The file's `__metadata__`.
    public var metadata: [String: String]
    public var createdAt: String

    package init(
        model: ModelName, number: Int, ref: String, digest: Digest, tensorCount: Int, parameterCount: Int, fileBytes: Int, step: Int? = nil,
        epoch: Int? = nil, metadata: [String: String], createdAt: String
    ) {
        self.model = model
        self.number = number
        self.ref = ref
        self.digest = digest
        self.tensorCount = tensorCount
        self.parameterCount = parameterCount
        self.fileBytes = fileBytes
        self.step = step
        self.epoch = epoch
        self.metadata = metadata
        self.createdAt = createdAt
    }
}

/// One tensor of a checkpoint.
public struct TensorEntry: Sendable, Codable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    public var parameters: Int
    public var bytes: Int
    public var digest: Digest

    package init(name: String, dtype: DType, shape: [Int], parameters: Int, bytes: Int, digest: Digest) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.parameters = parameters
        self.bytes = bytes
        self.digest = digest
    }
}

/// Tensors that share a layer prefix (the name up to its last `.`).
public struct LayerGroup: Sendable, Codable, Equatable {
    public var layer: String
    public var tensors: [TensorEntry]
    public var parameters: Int { tensors.reduce(0) { $0 + $1.parameters } }
    public var bytes: Int { tensors.reduce(0) { $0 + $1.bytes } }

    enum CodingKeys: String, CodingKey { case layer, tensors, parameters, bytes }

    public init(layer: String, tensors: [TensorEntry]) {
        self.layer = layer
        self.tensors = tensors
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        layer = try container.decode(String.self, forKey: .layer)
        tensors = try container.decode([TensorEntry].self, forKey: .tensors)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(layer, forKey: .layer)
        try container.encode(tensors, forKey: .tensors)
        try container.encode(parameters, forKey: .parameters)
        try container.encode(bytes, forKey: .bytes)
    }

    /// Groups tensors by layer, layers in numeric-aware name order (`layer.2` before `layer.10`).
    public static func group(_ tensors: [TensorEntry]) -> [LayerGroup] {
        var groups: [String: [TensorEntry]] = [:]
        for tensor in tensors {
            let layer = tensor.name.lastIndex(of: ".").map { String(tensor.name[..<$0]) } ?? tensor.name
            groups[layer, default: []].append(tensor)
        }
        return groups.keys.sorted(by: numericAwareLess).map { layer in
            LayerGroup(layer: layer, tensors: groups[layer]!.sorted { numericAwareLess($0.name, $1.name) })
        }
    }
}

/// A checkpoint with its tensors.
public struct CheckpointDetail: Sendable, Codable, Equatable {
    public var checkpoint: CheckpointSummary
    public var layers: [LayerGroup]
    /// For a checkpoint kept as a model directory: its files by path (shards and the rest).
    /// Empty for a checkpoint that is one safetensors file.
    public var files: [CheckpointFileEntry] = []
    /// Its OpenSSF model signature (`graft sign`, or a registered directory's `model.sig`);
    /// absent when it has none.
    public var signature: SignatureInfo? = nil

    package init(
        checkpoint: CheckpointSummary, layers: [LayerGroup], files: [CheckpointFileEntry] = [], signature: SignatureInfo? = nil
    ) {
        (self.checkpoint, self.layers, self.files, self.signature) = (checkpoint, layers, files, signature)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        checkpoint = try container.decode(CheckpointSummary.self, forKey: .checkpoint)
        layers = try container.decode([LayerGroup].self, forKey: .layers)
        files = try container.decodeIfPresent([CheckpointFileEntry].self, forKey: .files) ?? []
        signature = try container.decodeIfPresent(SignatureInfo.self, forKey: .signature)
    }
}

/// A model with its checkpoints and the tensors of its newest one.
public struct ModelDetail: Sendable, Codable, Equatable {
    public var model: ModelSummary
    public var checkpoints: [CheckpointSummary]
    public var latest: CheckpointDetail?
    /// For a student: its parent, relation, transfer mode and per-tensor manifest.
    public var manifest: ManifestSummary?
    /// Aliases on this model, each with the checkpoint (`NAME@N`) it points at.
    public var aliases: [String: String]
    /// Open advisories it carries or inherits; `ID@N` marks one on its own checkpoint N.
    public var advisories: [String]
}

/// What `addBase` or `addCheckpoint` committed.
public struct ImportResult: Sendable, Codable, Equatable {
    public var model: ModelName
    /// `NAME@N`.
    public var checkpoint: String
    public var digest: Digest
    public var tensors: Int
    public var parameters: Int
    /// Size of the imported file.
    public var logicalBytes: Int
    /// Tensor bytes this import added to the store.
    public var bytesStored: Int
    /// Tensor bytes the store held already (shared with other checkpoints).
    public var bytesAlreadyPresent: Int
    /// For a student: tensors its parent lacks, recorded as `new` in the manifest.
    public var newTensors: [String] = []
    /// Against a server: the bytes this client sent (blobs the server lacked, the proposal and
    /// the commit). Absent for a local import.
    public var bytesSent: Int?
    /// For a model directory: its files (shards and the rest). Absent for one file.
    public var files: Int? = nil
    /// The signature kept with it (a directory's `model.sig`): verified or not, by which key.
    public var signature: SignatureInfo? = nil
}

/// Totals over the whole registry.
public struct RegistryStats: Sendable, Codable, Equatable {
    public var models: Int
    public var bases: Int
    public var checkpoints: Int
    public var tensors: Int
    public var blobs: Int
    public var inlineBlobs: Int
    /// Sum of the checkpoints' file sizes: what storing each as its own file would take.
    public var logicalBytes: Int
    /// Bytes actually stored: each distinct blob once, as its store holds it (encoded where
    /// `graft compact` encoded it), plus the stored headers.
    public var physicalBytes: Int
    /// `logicalBytes / physicalBytes` (1 when empty).
    public var dedupRatio: Double
    /// Size of the SQLite database files.
    public var databaseBytes: Int
    /// Adapter students (transfer mode `adapter`) and their checkpoints.
    public var adapterModels: Int
    public var adapterCheckpoints: Int
    /// The adapter checkpoints' own bytes (weights and config), and what a full copy of the
    /// parent per checkpoint would take: what adapters cost against fine-tuned copies.
    public var adapterBytes: Int
    public var adapterParentBytes: Int
    /// Stored (not inline) blobs by codec: raw and stored bytes, one entry per codec.
    public var codecs: [CodecUsage]

    package init(
        models: Int, bases: Int, checkpoints: Int, tensors: Int, blobs: Int, inlineBlobs: Int, logicalBytes: Int, physicalBytes: Int,
        dedupRatio: Double, databaseBytes: Int, adapterModels: Int = 0, adapterCheckpoints: Int = 0, adapterBytes: Int = 0,
        adapterParentBytes: Int = 0, codecs: [CodecUsage] = []
    ) {
        self.codecs = CodecUsage.complete(codecs)
        (self.adapterModels, self.adapterCheckpoints, self.adapterBytes, self.adapterParentBytes) = (
            adapterModels, adapterCheckpoints, adapterBytes, adapterParentBytes
        )
        self.models = models
        self.bases = bases
        self.checkpoints = checkpoints
        self.tensors = tensors
        self.blobs = blobs
        self.inlineBlobs = inlineBlobs
        self.logicalBytes = logicalBytes
        self.physicalBytes = physicalBytes
        self.dedupRatio = dedupRatio
        self.databaseBytes = databaseBytes
    }
}

/// One problem `verify` found.
public struct BlobProblem: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable { case missing, wrongSize = "wrong_size", wrongDigest = "wrong_digest" }
    public var digest: Digest
    public var kind: Kind
    public var detail: String
    /// The checkpoints (`NAME@N`) that use this blob.
    public var checkpoints: [String]
}

/// The result of `verify`.
public struct VerifyReport: Sendable, Codable, Equatable {
    public var checkpoints: Int
    public var blobs: Int
    /// Whether every blob's bytes were rehashed.
    public var readData: Bool
    public var bytesRead: Int
    public var problems: [BlobProblem]
    /// Every checkpoint that uses a damaged blob, sorted.
    public var damagedCheckpoints: [String]
    /// Files under `blobs/` that are not blobs (wrong name or place), relative to the root.
    public var strayFiles: [String] = []
    /// Blob files no blob row knows: an interrupted import's, removed by `gc`. Not damage.
    public var orphanFiles: Int = 0
    /// Models whose lineage record (path, copy of the parent edge, checkpoint count, metric
    /// summaries) disagrees with the edges, checkpoints and metrics it is kept from, one line
    /// each: `NAME: what differs`.
    public var lineageProblems: [String] = []
    public var ok: Bool { problems.isEmpty && strayFiles.isEmpty && lineageProblems.isEmpty }

    enum CodingKeys: String, CodingKey {
        case checkpoints, blobs, readData, bytesRead, problems, damagedCheckpoints, strayFiles, orphanFiles, lineageProblems, ok
    }

    public init(checkpoints: Int, blobs: Int, readData: Bool, bytesRead: Int, problems: [BlobProblem], damagedCheckpoints: [String]) {
        self.checkpoints = checkpoints
        self.blobs = blobs
        self.readData = readData
        self.bytesRead = bytesRead
        self.problems = problems
        self.damagedCheckpoints = damagedCheckpoints
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            checkpoints: try c.decode(Int.self, forKey: .checkpoints), blobs: try c.decode(Int.self, forKey: .blobs),
            readData: try c.decode(Bool.self, forKey: .readData), bytesRead: try c.decode(Int.self, forKey: .bytesRead),
            problems: try c.decode([BlobProblem].self, forKey: .problems),
            damagedCheckpoints: try c.decode([String].self, forKey: .damagedCheckpoints))
        strayFiles = try c.decodeIfPresent([String].self, forKey: .strayFiles) ?? []
        orphanFiles = try c.decodeIfPresent(Int.self, forKey: .orphanFiles) ?? 0
        lineageProblems = try c.decodeIfPresent([String].self, forKey: .lineageProblems) ?? []
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(checkpoints, forKey: .checkpoints)
        try c.encode(blobs, forKey: .blobs)
        try c.encode(readData, forKey: .readData)
        try c.encode(bytesRead, forKey: .bytesRead)
        try c.encode(problems, forKey: .problems)
        try c.encode(damagedCheckpoints, forKey: .damagedCheckpoints)
        try c.encode(strayFiles, forKey: .strayFiles)
        try c.encode(orphanFiles, forKey: .orphanFiles)
        try c.encode(lineageProblems, forKey: .lineageProblems)
        try c.encode(ok, forKey: .ok)
    }
}

/// Compares names so that embedded numbers sort by value: `layer.2` < `layer.10`.
public func numericAwareLess(_ a: String, _ b: String) -> Bool {
    // Native strings are contiguous UTF-8: compare in place, allocating nothing (this runs in
    // the sorts of lineage trees and tensor listings, tens of thousands of times).
    if let result = a.utf8.withContiguousStorageIfAvailable({ x in b.utf8.withContiguousStorageIfAvailable { y in numericAwareLess(x, y) } }
    ),
        let result
    {
        return result
    }
    return numericAwareLess(Array(a.utf8)[...], Array(b.utf8)[...])
}

private func numericAwareLess<C: RandomAccessCollection>(_ x: C, _ y: C) -> Bool where C.Element == UInt8, C.Index == Int {
    @inline(__always) func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
    var i = x.startIndex, j = y.startIndex
    while i < x.endIndex, j < y.endIndex {
        if isDigit(x[i]) && isDigit(y[j]) {
            let si = i, sj = j
            while i < x.endIndex, isDigit(x[i]) { i += 1 }
            while j < y.endIndex, isDigit(y[j]) { j += 1 }
            var zi = si, zj = sj
            while zi < i, x[zi] == 0x30 { zi += 1 }
            while zj < j, y[zj] == 0x30 { zj += 1 }
            // The number with more significant digits is larger; equal lengths compare digit by digit.
            if i - zi != j - zj { return i - zi < j - zj }
            var k = 0
            while zi + k < i {
                if x[zi + k] != y[zj + k] { return x[zi + k] < y[zj + k] }
                k += 1
            }
            // Equal values: fewer leading zeros first.
            if i - si != j - sj { return i - si < j - sj }
            continue
        }
        if x[i] != y[j] { return x[i] < y[j] }
        i += 1
        j += 1
    }
    return i == x.endIndex && j < y.endIndex
}
