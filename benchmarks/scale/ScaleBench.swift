// Scale benchmark: builds a synthetic registry through the Graft library API, then times the
// lineage and best-checkpoint queries on it.
//
//   swift run -c release graft-scale-bench [--bases N] [--students N] [--checkpoints N]
//       [--metrics N] [--chain N] [--big-family N] [--runs N] [--registry PATH] [--reuse 1]
//       [--only TEXT]   (time only the queries whose label contains TEXT: for profiling one)
//       [--metadata postgresql://USER@HOST:PORT/DB]   (the metadata in PostgreSQL; --registry is
//       then this machine's directory; `make bench-scale-backends` runs both side by side)
//
// Students spread over the bases in several generations (each student's parent is a random
// earlier model of the same family), plus one chain --chain deep under the first base.
// Every student gets --checkpoints checkpoints with --metrics metrics each.
import Foundation
import Graft
import SafeTensors

struct Options {
    var bases = 10
    var students = 1_000
    var checkpoints = 10
    var metrics = 10
    var chain = 100
    /// Students that go to base1 (the rest spread over the other bases).
    var bigFamily = 0
    var runs = 50
    var registry: String? = nil
    /// Time the queries on the registry at --registry as it is, without building.
    var reuse = false
    /// Time only the queries whose label contains this.
    var only: String? = nil
    /// A PostgreSQL metadata store instead of SQLite.
    var metadata: String? = nil

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let flag = iterator.next() {
            guard let value = iterator.next() else { break }
            switch flag {
            case "--bases": bases = Int(value) ?? bases
            case "--students": students = Int(value) ?? students
            case "--checkpoints": checkpoints = Int(value) ?? checkpoints
            case "--metrics": metrics = Int(value) ?? metrics
            case "--chain": chain = Int(value) ?? chain
            case "--big-family": bigFamily = Int(value) ?? bigFamily
            case "--runs": runs = Int(value) ?? runs
            case "--registry": registry = value
            case "--reuse": reuse = value == "1" || value == "yes"
            case "--only": only = value
            case "--metadata": metadata = value
            default: FileHandle.standardError.write(Data("unknown option \(flag)\n".utf8)); exit(64)
            }
        }
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
}

func peakRSSMiB() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
}

@main
struct ScaleBench {
    @MainActor static func main() async throws {
        let options = Options(CommandLine.arguments)
        let root = options.registry ?? NSTemporaryDirectory() + "graft-scale-\(getpid())"
        if !options.reuse { try? FileManager.default.removeItem(atPath: root) }
        // A bulk load: commits are relaxed (synchronous=NORMAL), as an import tool would run.
        let openStart = DispatchTime.now().uptimeNanoseconds
        var configuration = RegistryConfiguration(root: root, durability: .relaxed)
        configuration.metadata = options.metadata
        let registry = try await Registry.create(configuration).registry
        // On a registry from an older build this includes its schema migrations.
        let openTime = Double(DispatchTime.now().uptimeNanoseconds - openStart) / 1e9
        let scratch = root + "-files"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer {
            try? FileManager.default.removeItem(atPath: scratch)
            if options.registry == nil { try? FileManager.default.removeItem(atPath: root) }
        }

        // Small files: every checkpoint is a real safetensors commit, and every tensor is inline.
        func file(_ name: String, seed: UInt64) throws -> String {
            var generator = SeededGenerator(seed: seed)
            let path = scratch + "/" + name + ".safetensors"
            try SafeTensorsWriter.write(
                [
                    TensorData(name: "features.0.weight", dtype: .f32, shape: [16], bytes: generator.bytes(64)),
                    TensorData(name: "classifier.weight", dtype: .f32, shape: [4], bytes: generator.bytes(16)),
                ], to: path)
            return path
        }

        var generator = SeededGenerator(seed: 1)
        func random() -> Double { Double(generator.next() >> 11) / Double(1 << 53) }
        let metricNames = ["accuracy", "loss"] + (0..<max(0, options.metrics - 2)).map { "metric\($0)" }

        var baseFiles: [String] = []
        let buildStart = DispatchTime.now().uptimeNanoseconds
        if !options.reuse {
            for b in 0..<options.bases {
                let path = try file("base\(b)", seed: UInt64(b))
                baseFiles.append(path)
                _ = try await registry.addBase(name: ModelName("base\(b)"), file: path)
            }
            var families: [[String]] = (0..<options.bases).map { ["base\($0)"] }
            var deepest = "base0"
            func student(_ name: String, parent: String, family: Int) async throws {
                _ = try await registry.createStudent(
                    name: ModelName(name), from: Reference(parsing: parent),
                    manifest: .rules([ManifestRule(.freeze, "features")], freezeThrough: nil))
                for k in 0..<options.checkpoints {
                    var metrics: [MetricAssignment] = []
                    for name in metricNames { metrics.append(try MetricAssignment(name: name, value: random())) }
                    _ = try await registry.addCheckpoint(
                        model: ModelName(name), file: baseFiles[family], step: k * 100, metrics: metrics, split: "val")
                }
            }
            for s in 0..<options.students {
                let family = s < options.bigFamily ? 1 % options.bases : s % options.bases
                let members = families[family]
                let parent = members[Int(generator.next() % UInt64(members.count))]
                let name = "s\(s)"
                try await student(name, parent: parent, family: family)
                families[family].append(name)
                if s % 1000 == 999 { FileHandle.standardError.write(Data("\(s + 1) students\n".utf8)) }
            }
            for depth in 0..<options.chain {
                let name = "chain\(depth)"
                try await student(name, parent: deepest, family: 0)
                deepest = name
            }
        }
        let buildTime = Double(DispatchTime.now().uptimeNanoseconds - buildStart) / 1e9
        let stats = try await registry.stats()
        let totalStudents = options.students + options.chain
        let metricRows = stats.checkpoints * options.metrics
        print("# Graft scale benchmark (\(options.metadata == nil ? "SQLite" : "PostgreSQL") metadata)")
        print("")
        if options.reuse {
            print(
                """
                Reused the registry at \(root): \(stats.models) models, \(stats.checkpoints) checkpoints (build figures are from its\
                 own run); opened in \(String(format: "%.2f", openTime)) s.
                """
            )
        } else {
            print(
                """
                Built \(options.bases) bases, \(totalStudents) students (one chain \(options.chain) deep), \(stats.checkpoints)\
                 checkpoints, \(metricRows) metric rows in \(String(format: "%.1f", buildTime)) s:
                """
            )
            print(
                String(
                    format: "%.0f checkpoints/s, %.0f metric rows/s, each checkpoint one commit (durability relaxed for the bulk load).",
                    Double(stats.checkpoints) / buildTime, Double(metricRows) / buildTime))
        }
        print("")

        if !options.reuse { try await registry.addAdvisory(on: Reference(parsing: "base0"), id: "BENCH-1", severity: .high) }
        let deepestName = try ModelName("chain\(options.chain - 1)")
        var timings: [(String, [Double])] = []
        func time(_ label: String, _ body: () async throws -> Void) async throws {
            if let only = options.only, !label.contains(only) { return }
            var samples: [Double] = []
            try await body()  // warm-up
            for _ in 0..<options.runs {
                let start = DispatchTime.now().uptimeNanoseconds
                try await body()
                samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
            timings.append((label, samples))
        }
        try await time("one small read (advisory list), for scale") { _ = try await registry.advisories() }
        let under = try await registry.lineage(ModelName("base1")).descendants.count
        try await time("best --under base1 (\(under) descendants)") {
            _ = try await registry.best(metric: "accuracy", split: "val", scope: .under(ModelName("base1")))
        }
        if options.bases > 2 {
            let typical = try await registry.lineage(ModelName("base2")).descendants.count
            try await time("best --under base2 (\(typical) descendants)") {
                _ = try await registry.best(metric: "accuracy", split: "val", scope: .under(ModelName("base2")))
            }
        }
        try await time("best --model s1") { _ = try await registry.best(metric: "accuracy", split: "val", scope: .model(ModelName("s1"))) }
        try await time("ancestors of the deepest student (\(options.chain + 1) up)") {
            _ = try await registry.lineage(deepestName).ancestors.count
        }
        try await time("descendants of base1") { _ = try await registry.lineage(ModelName("base1")).descendants.count }
        try await time("affected base1") { _ = try await registry.affected(Reference(parsing: "base1")) }
        try await time("affected base0 (flagged, with the chain)") {
            _ = try await registry.affected(Reference(parsing: "base0"), exposure: nil)
        }
        // Exposure (issue 26), digests only: every descendant's tensors against the flagged checkpoint.
        let reach = try await registry.affected(Reference(parsing: "base0"), exposure: nil).count
        try await time("affected base0 with exposure (digests, \(reach) descendants)") {
            _ = try await registry.affected(Reference(parsing: "base0"), exposure: .digests)
        }
        if options.bigFamily > 0 {
            // The big family under a temporary advisory on base1, removed again (a reused registry stays as built).
            let id = "BENCH-EXPOSURE-\(getpid())"
            try await registry.addAdvisory(on: Reference(parsing: "base1"), id: id, severity: .low)
            let family = try await registry.affected(Reference(parsing: "base1"), exposure: nil).count
            try await time("affected base1 with exposure (digests, \(family) descendants)") {
                _ = try await registry.affected(Reference(parsing: "base1"), exposure: .digests)
            }
            try await time("affected base1 without exposure (\(family) descendants)") {
                _ = try await registry.affected(Reference(parsing: "base1"), exposure: nil)
            }
            try await registry.resolveAdvisory(id)
        }
        print("| query | median ms | p90 ms |")
        print("|---|---:|---:|")
        for (label, samples) in timings {
            let sorted = samples.sorted()
            print(
                String(
                    format: "| %@ | %.2f | %.2f |", label, median(samples) * 1000,
                    sorted[min(sorted.count - 1, sorted.count * 9 / 10)] * 1000))
        }
        print("")
        print(String(format: "Peak RSS %.0f MiB; database %.0f MiB.", peakRSSMiB(), Double(stats.databaseBytes) / 1048576))
    }
}
