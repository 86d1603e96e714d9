import Foundation
import Graft
import GraftTestSupport
import Testing

@testable import Trainer

/// The smoke version of `make results-vulnerability` (issue 26): a tiny teacher, a feature
/// extractor and a from-scratch control through a registry, and Wang et al.'s mimicry attack on
/// the teacher alone, in seconds.
@Suite("Mimicry attack")
struct MimicryTests {
    static let tiny = "conv:4:3,bn,relu,pool:2,conv:8:3,bn,relu,pool:2,flatten,linear:32,relu"

    @Test("an attack on the teacher alone fools the student that kept its features far more than one trained from scratch")
    func inheritedVulnerability() async throws {
        let directory = TemporaryDirectory()
        let registry = try await Registry.create(at: directory.file("registry")).registry
        let data = try fashion
        let settings = TrainingSettings(epochs: 2, batchSize: 16, optimizer: OptimizerSettings(kind: .adam, learningRate: 0.003))
        let teacherReports = try await Engine.trainBase(
            try ModelName("teacher"), architecture: Self.tiny, in: registry, data: data,
            selection: DataSelection(classes: Array(0...4), perClass: 300, validationPerClass: 20), settings: settings,
            provenance: Provenance(license: "mit"))
        let teacherReference = try Reference(parsing: try #require(teacherReports.last?.checkpoint))
        let students = DataSelection(classes: Array(5...9), perClass: 150, validationPerClass: 60, seed: 3)
        _ = try await Engine.deriveStudent(try ModelName("fe"), from: teacherReference, plan: .featureExtraction, in: registry)
        // Only the head trains, on features computed once: more epochs cost little.
        var headOnly = settings
        headOnly.epochs = 8
        let feReports = try await Engine.trainStudent(
            try ModelName("fe"), in: registry, data: data, selection: students, settings: headOnly)
        let scratchReports = try await Engine.trainBase(
            try ModelName("scratch"), architecture: Self.tiny, in: registry, data: data, selection: students, settings: settings,
            provenance: Provenance(license: "mit"))
        let (fe, scratch) = (
            try await Engine.load(try Reference(parsing: feReports.last!.checkpoint!), from: registry),
            try await Engine.load(try Reference(parsing: scratchReports.last!.checkpoint!), from: registry)
        )

        let teacher = try await Engine.load(teacherReference, from: registry)
        teacher.freezeAll()
        let pairs = MimicryPairs(from: try students.split(data).validation, count: 60, seed: 1)
        #expect(zip(pairs.sourceLabels, pairs.targetLabels).allSatisfy { $0 != $1 })
        let attack = MimicryAttack(epsilon: 0.2, steps: 30, layer: teacher.blockEnds.last!)
        let (images, before, after) = attack.run(teacher: teacher, sources: pairs.sources, targets: pairs.targets)
        // Inside the ball and the pixel range.
        #expect(zip(images.data, pairs.sources.data).allSatisfy { abs($0 - $1) <= 0.2 + 1e-6 && $0 >= 0 && $0 <= 1 })
        let ratio = after.reduce(0, +) / before.reduce(0, +)
        #expect(ratio < 0.5, "the teacher's representation moves toward the target's: \(ratio)")

        let (feSuccess, feCounted) = pairs.success(of: fe, on: images)
        let (scratchSuccess, scratchCounted) = pairs.success(of: scratch, on: images)
        #expect(feCounted >= 20 && scratchCounted >= 20, "pairs both classify correctly: \(feCounted), \(scratchCounted)")
        #expect(feSuccess >= 0.5, "feature extractor fooled on \(feSuccess)")
        #expect(feSuccess >= scratchSuccess + 0.3, "feature extractor \(feSuccess), scratch \(scratchSuccess)")
        // Unattacked images do not fool anyone: success is the attack's, not the pairs'.
        #expect(pairs.success(of: fe, on: pairs.sources).rate == 0)

        // The registry's side: the feature extractor holds every teacher byte but the head; the control none.
        let feExposure = try await registry.exposure(of: try Reference(parsing: "fe"), to: teacherReference)
        let scratchExposure = try await registry.exposure(of: try Reference(parsing: "scratch"), to: teacherReference)
        #expect(feExposure.exposure > 0.9 && feExposure.frozenDepth == feExposure.layers.count - 1)
        // A control shares no weights; only coincidences as small as BatchNorm's batch counter (the same
        // number of steps) can match by digest.
        #expect(scratchExposure.exposure < 0.01 && (scratchExposure.drift ?? 0) > 0.5, "\(scratchExposure.exposure)")
    }
}
