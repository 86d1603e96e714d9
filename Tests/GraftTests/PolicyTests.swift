import Foundation
import GraftTestSupport
import SafeTensors
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftSQLite

/// Documented policies that a mutation of the code once broke without any test noticing:
/// checkpoint advisories reaching students, best's tie-break order, manifest rule priorities.

/// base ─┬─ s  (checkpoints s@1, s@2, s@3)
///       │   ├─ from1  (derived from s@1)
///       │   └─ from2  (derived from s@2) ── grand (derived from from2@1)
///       └─ other
private func branches() async throws -> TestRegistry {
    let test = try await TestRegistry()
    let r = test.registry
    let file = try test.writeBase()
    _ = try await r.addBase(name: ModelName("base"), file: file)
    for name in ["s", "other"] {
        _ = try await r.createStudent(name: ModelName(name), from: Reference(parsing: "base@1"), manifest: .rules([], freezeThrough: nil))
    }
    for value in ["0.91", "0.92", "0.93"] {
        _ = try await r.addCheckpoint(
            model: ModelName("s"), file: file, metrics: [try MetricAssignment(parsing: "accuracy=\(value)")], split: "val")
    }
    _ = try await r.addCheckpoint(
        model: ModelName("other"), file: file, metrics: [try MetricAssignment(parsing: "accuracy=0.10")], split: "val")
    for (name, parent, value) in [("from1", "s@1", "0.50"), ("from2", "s@2", "0.60"), ("grand", "from2@1", "0.99")] {
        _ = try await r.createStudent(name: ModelName(name), from: Reference(parsing: parent), manifest: .rules([], freezeThrough: nil))
        _ = try await r.addCheckpoint(
            model: ModelName(name), file: file, metrics: [try MetricAssignment(parsing: "accuracy=\(value)")], split: "val")
    }
    return test
}

/// The error's case name (`modelExists`, `busy`, …), so tests can insist on the right refusal.
func caseName(_ error: any Error) -> String {
    guard let error = error as? GraftError else { return "not a GraftError: \(type(of: error))" }
    return Mirror(reflecting: error).children.first?.label ?? "\(error)".split(separator: " ").first.map(String.init) ?? ""
}

/// Expects `body` to throw the GraftError case named `expected`, and nothing else; returns it.
@discardableResult
func expectGraftError<T>(
    _ expected: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> T
) async -> GraftError? {
    do {
        _ = try await body()
        Issue.record("expected GraftError.\(expected), but nothing was thrown", sourceLocation: sourceLocation)
    } catch {
        #expect(caseName(error) == expected, "\(error)", sourceLocation: sourceLocation)
        return error as? GraftError
    }
    return nil
}

@Suite("Policies: checkpoint advisories, tie-breaks, rule priorities")
struct PolicyTests {
    @Test(
        "an advisory on checkpoint s@2 reaches the students derived from s@2 and theirs — affected, lineage flags, best — and no one else")
    func checkpointAdvisoryReaches() async throws {
        let test = try await branches()
        let r = test.registry
        try await r.addAdvisory(on: Reference(parsing: "s@2"), id: "CKPT-2", severity: .high)

        // affected: from2 and grand (through from2@1), with their paths; never from1 or other.
        let affected = try await r.affected(Reference(parsing: "s@2"))
        #expect(affected.map(\.model) == ["from2", "grand"])
        #expect(affected.first { $0.model == "grand" }?.path == ["s@2", "from2@1", "grand"])
        #expect(affected.allSatisfy { $0.advisories == ["CKPT-2"] })
        // Asked about the model, the same students are reached.
        #expect(try await r.affected(Reference(parsing: "s")).map(\.model) == ["from2", "grand"])
        #expect(try await r.affected(Reference(parsing: "s@1")).isEmpty)

        // lineage, whole and by parts: s carries it on its own checkpoint only; from2 and grand inherit it.
        let whole = try await r.lineage(ModelName("base"))
        let flags = Dictionary(uniqueKeysWithValues: whole.descendants.map { ($0.name, $0.advisories) })
        #expect(flags == ["s": ["CKPT-2@2"], "from1": [], "from2": ["CKPT-2"], "grand": ["CKPT-2"], "other": []])
        let down = try await r.lineage(ModelName("s"), parts: .descendants)
        #expect(
            Dictionary(uniqueKeysWithValues: down.descendants.map { ($0.name, $0.advisories) }) == [
                "from1": [], "from2": ["CKPT-2"], "grand": ["CKPT-2"],
            ])
        let up = try await r.lineage(ModelName("grand"), parts: .ancestors)
        #expect(up.model.advisories == ["CKPT-2"])
        #expect(up.ancestors.map(\.advisories) == [["CKPT-2"], ["CKPT-2@2"], []])

        // best: grand (0.99) is out everywhere it would win; s@2 itself is out, s@3 is not.
        var best = try await r.best(metric: "accuracy", split: "val")
        #expect(best.checkpoint.ref == "s@3" && best.excludedFlagged == 3, "s@2, from2@1, grand@1 are out")
        best = try await r.best(metric: "accuracy", split: "val", scope: .under(ModelName("base")))
        #expect(best.checkpoint.ref == "s@3" && best.excludedFlagged == 3)
        best = try await r.best(metric: "accuracy", split: "val", scope: .under(ModelName("s")))
        #expect(best.checkpoint.ref == "s@3")
        best = try await r.best(metric: "accuracy", direction: .min, split: "val", scope: .model(ModelName("s")))
        #expect(best.checkpoint.ref == "s@1" && best.excludedFlagged == 1)
        await expectGraftError("allCandidatesFlagged") {
            try await r.best(metric: "accuracy", split: "val", scope: .under(ModelName("from2")))
        }
        await expectGraftError("allCandidatesFlagged") {
            try await r.best(metric: "accuracy", split: "val", scope: .model(ModelName("grand")))
        }
        #expect(try await r.best(metric: "accuracy", split: "val", scope: .model(ModelName("from1"))).checkpoint.ref == "from1@1")
        #expect(try await r.best(metric: "accuracy", split: "val", includeFlagged: true).checkpoint.ref == "grand@1")

        // Resolved, it reaches no one.
        try await r.resolveAdvisory("CKPT-2")
        #expect(try await r.affected(Reference(parsing: "s@2")).isEmpty)
        #expect(try await r.best(metric: "accuracy", split: "val").checkpoint.ref == "grand@1")
    }

    @Test(
        """
        best: ties go to the earliest model name (not the first created), then the lowest checkpoint number — registry-wide, --under\
         and --model
        """
    )
    func tieBreaks() async throws {
        let test = try await TestRegistry()
        let r = test.registry
        let file = try test.writeBase()
        _ = try await r.addBase(name: ModelName("root"), file: file)
        // Created in the order zeta, mid, alpha: name order is the reverse of creation order.
        for name in ["zeta", "mid", "alpha"] {
            _ = try await r.createStudent(
                name: ModelName(name), from: Reference(parsing: "root@1"), manifest: .rules([], freezeThrough: nil))
        }
        func commit(_ model: String, _ value: String) async throws {
            _ = try await r.addCheckpoint(model: ModelName(model), file: file, metrics: [try MetricAssignment(parsing: "score=\(value)")])
        }
        try await commit("zeta", "0.5")  // zeta@1
        try await commit("zeta", "0.9")  // zeta@2
        try await commit("mid", "0.2")  // mid@1
        try await commit("alpha", "0.9")  // alpha@1
        try await commit("alpha", "0.9")  // alpha@2
        try await commit("mid", "0.9")  // mid@2
        let maxed = [("all", BestScope.all), ("under", .under(try ModelName("root")))]
        for (label, scope) in maxed {
            let best = try await r.best(metric: "score", direction: .max, scope: scope)
            #expect(best.checkpoint.ref == "alpha@1", "\(label): \(best.checkpoint.ref)")
        }
        let alpha = try await r.best(metric: "score", direction: .max, scope: .model(ModelName("alpha")))
        #expect(alpha.checkpoint.ref == "alpha@1" && alpha.checkpoint.reference == .number(try ModelName("alpha"), 1))
        #expect(try await r.best(metric: "score", direction: .max, scope: .model(ModelName("zeta"))).checkpoint.ref == "zeta@2")
        // Minimising: one winner, whatever the order.
        #expect(try await r.best(metric: "score", direction: .min, scope: .under(ModelName("root"))).checkpoint.ref == "mid@1")
        // A tie with the lowest value, across names created in reverse order.
        try await r.logMetrics(Reference(parsing: "zeta@1"), [try MetricAssignment(parsing: "score=0.2")], split: nil)
        for scope in [BestScope.all, .under(try ModelName("root"))] {
            #expect(try await r.best(metric: "score", direction: .min, scope: scope).checkpoint.ref == "mid@1")
        }
        // Once alpha is flagged, the tie at 0.9 goes to the next name, mid, not to zeta (created first).
        try await r.addAdvisory(on: Reference(parsing: "alpha"), id: "ALPHA", severity: .low)
        for scope in [BestScope.all, .under(try ModelName("root"))] {
            #expect(try await r.best(metric: "score", direction: .max, scope: scope).checkpoint.ref == "mid@2")
        }
    }

    @Test("rule priorities on a tie of specificity: drop > reinit > train > freeze, whatever the order given")
    func rulePriorities() throws {
        let parent = ["features.1.weight", "features.1.running_mean", "features.10.weight", "classifier.weight"].map { name in
            TensorEntry(name: name, dtype: .f32, shape: [4], parameters: 4, bytes: 16, digest: Digest.of(Array(name.utf8)))
        }
        func state(_ rules: [ManifestRule], of tensor: String = "classifier.weight") throws -> TensorState? {
            try ManifestResolver.resolve(.rules(rules, freezeThrough: nil), parent: parent).first { $0.name == tensor }?.state
        }
        let order: [ManifestRule.Action] = [.freeze, .train, .reinit, .drop]
        let expected: [ManifestRule.Action: TensorState] = [.freeze: .frozen, .train: .trainable, .reinit: .new, .drop: .dropped]
        for (i, lower) in order.enumerated() {
            for higher in order[(i + 1)...] {
                for rules in [
                    [ManifestRule(lower, "classifier"), ManifestRule(higher, "classifier")],
                    [ManifestRule(higher, "classifier"), ManifestRule(lower, "classifier")],
                ] {
                    #expect(try state(rules) == expected[higher], "\(higher) must beat \(lower)")
                }
            }
        }
        // A glob against a plain prefix with as many literal characters (`features.1*` and
        // `features.1`: ten each) is a tie, settled by the action — train beats freeze either way.
        #expect(
            try state([ManifestRule(.freeze, "features.1*"), ManifestRule(.train, "features.1")], of: "features.1.running_mean")
                == .trainable)
        #expect(
            try state([ManifestRule(.train, "features.1*"), ManifestRule(.freeze, "features.1")], of: "features.1.running_mean")
                == .trainable)
        // More literal characters win over the action's rank.
        #expect(
            try state([ManifestRule(.drop, "features.1*"), ManifestRule(.freeze, "features.1.weight")], of: "features.1.weight") == .frozen)
        #expect(try state([ManifestRule(.freeze, "features.1*")], of: "features.10.weight") == .frozen)
    }
}

@Suite("Library errors")
struct LibraryErrorTests {
    @Test("the library's messages name no command or flag; the CLI adds its own advice")
    func noCommandLineWording() throws {
        let digest = Digest.of([1, 2, 3])
        let errors: [GraftError] = [
            .notARegistry(path: "/r", reason: "no such directory"), .modelNotFound(try ModelName("m"), suggestions: []),
            .outputExists(path: "/o"), .damagedBlob(digest, reason: "its file is missing"), .patternMatchesNothing("drop head"),
            .allCandidatesFlagged(metric: "acc", candidates: 2), .advisoryNotFound("A"), .blobVanished(digest),
            .protected("m", reasons: [.descendants(["s"])]), .busy, .blobMismatch(digest, reason: "hash to x"),
        ]
        for error in errors {
            #expect(!error.description.contains("`graft ") && !error.description.contains(" --"), "\(error.description)")
        }
    }
}
