import Foundation
import GRDB
import GraftTestSupport
import SafeTensors

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftSQLite

/// A registry in its own temporary directory.
struct TestRegistry {
    let directory = TemporaryDirectory()
    let registry: Registry
    var root: String { registry.layout.root }

    init(inlineThreshold: Int = Registry.defaultInlineThreshold) async throws {
        registry = try await Registry.create(at: directory.file("registry"), inlineThreshold: inlineThreshold).registry
    }

    /// Writes a small CNN-shaped base: conv, BatchNorm (with its buffers) and a classifier.
    func writeBase(_ name: String = "base.safetensors", seed: UInt64 = 1, metadata: [String: String]? = ["format": "pt"]) throws -> String {
        let path = directory.file(name)
        try SafeTensorsWriter.write(baseTensors(seed: seed), metadata: metadata, to: path)
        return path
    }

    /// Writes the small base into `directory` (for registries made outside a TestRegistry).
    static func base(in directory: TemporaryDirectory) throws -> String {
        let path = directory.file("base.safetensors")
        try SafeTensorsWriter.write(baseTensors(seed: 1), metadata: ["format": "pt"], to: path)
        return path
    }

    func rows(_ sql: String) throws -> Int {
        try DatabaseQueue(path: registry.layout.database).read { db in try Int.fetchOne(db, sql: sql) ?? -1 }
    }

    /// `EXPLAIN QUERY PLAN` details of each statement.
    func plans(_ statements: [String]) throws -> [String] {
        try DatabaseQueue(path: registry.layout.database).read { db in
            try statements.map { sql in
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql).map { $0["detail"] as String }.joined(separator: "; ")
            }
        }
    }

    /// The files under `blobs/` and `tmp/`, relative to the root.
    var storedFiles: [String] { filesUnder(root).filter { !$0.hasPrefix("graft.sqlite") } }
}

func baseTensors(seed: UInt64) -> [TensorData] {
    var generator = SeededGenerator(seed: seed)
    func f32(_ name: String, _ shape: [Int]) -> TensorData {
        let count = shape.reduce(1, *)
        return TensorData(name: name, dtype: .f32, shape: shape, bytes: randomBytes(count * 4, using: &generator))
    }
    return [
        f32("features.0.weight", [16, 1, 3, 3]), f32("features.0.bias", [16]),
        f32("features.1.weight", [16]), f32("features.1.bias", [16]),
        f32("features.1.running_mean", [16]), f32("features.1.running_var", [16]),
        TensorData(name: "features.1.num_batches_tracked", dtype: .i64, shape: [], bytes: randomBytes(8, using: &generator)),
        f32("features.4.weight", [32, 16, 3, 3]), f32("features.10.weight", [32, 32, 3, 3]),
        f32("classifier.weight", [10, 512]), f32("classifier.bias", [10]),
    ]
}

func fileBytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }
