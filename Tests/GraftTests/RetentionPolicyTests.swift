import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftSQLite

/// The retention policy alone: no registry, no database.
@Suite("Retention policy")
struct RetentionPolicyTests {
    private func kept(_ plan: [(number: Int, reasons: [String])]) -> [Int] { plan.filter { !$0.reasons.isEmpty }.map(\.number) }

    @Test("keep-last keeps exactly the N highest numbers, whatever the order given; 0 keeps none")
    func keepLast() {
        let candidates = [5, 1, 4, 2, 3].map { RetentionPolicy.Candidate(number: $0) }
        #expect(kept(RetentionPolicy(keepLast: 2).decide(candidates)) == [4, 5])
        #expect(kept(RetentionPolicy(keepLast: 0).decide(candidates)) == [])
        #expect(kept(RetentionPolicy(keepLast: 9).decide(candidates)) == [1, 2, 3, 4, 5])
        #expect(RetentionPolicy(keepLast: 1).decide(candidates).map(\.number) == [1, 2, 3, 4, 5], "ascending")
        #expect(RetentionPolicy(keepLast: 1).decide(candidates).last?.reasons == ["one of the newest 1"])
    }

    @Test("keep-best ranks by the metric in its direction, ties to the lower number; checkpoints without it are not candidates")
    func keepBest() {
        let candidates = [
            RetentionPolicy.Candidate(number: 1, value: 0.7), RetentionPolicy.Candidate(number: 2, value: 0.9),
            RetentionPolicy.Candidate(number: 3, value: 0.9), RetentionPolicy.Candidate(number: 4),
            RetentionPolicy.Candidate(number: 5, value: 0.1),
        ]
        let max = RetentionPolicy(keepLast: 0, keepBest: 2, metric: "acc", direction: .max).decide(candidates)
        #expect(kept(max) == [2, 3])
        #expect(max.first { $0.number == 2 }?.reasons == ["one of the best 2 by acc (max)"])
        #expect(
            kept(RetentionPolicy(keepLast: 0, keepBest: 1, metric: "acc", direction: .max).decide(candidates)) == [2],
            "tie: the lower number")
        #expect(kept(RetentionPolicy(keepLast: 0, keepBest: 2, metric: "loss", direction: .min).decide(candidates)) == [1, 5])
        #expect(
            kept(RetentionPolicy(keepLast: 0, keepBest: 9, metric: "acc", direction: .max).decide(candidates)) == [1, 2, 3, 5],
            "4 has no value")
        #expect(kept(RetentionPolicy(keepLast: 0, keepBest: 2, metric: nil).decide(candidates)) == [], "no metric, no best")
    }

    @Test("reasons add up: the policy's first, then the protections; a protected checkpoint stays whatever the policy says")
    func protections() {
        let candidates = [
            RetentionPolicy.Candidate(number: 1, value: 0.9, protections: [.aliases(model: "m", ["prod"])]),
            RetentionPolicy.Candidate(number: 2, value: 0.1, protections: [.students(["s"])]),
            RetentionPolicy.Candidate(number: 3, value: 0.5),
        ]
        let plan = RetentionPolicy(keepLast: 1, keepBest: 1, metric: "acc", direction: .max).decide(candidates)
        #expect(
            plan.map(\.reasons) == [
                ["one of the best 1 by acc (max)", "aliased as m@prod"], ["students derive from it (s)"], ["one of the newest 1"],
            ])
        #expect(kept(RetentionPolicy(keepLast: 0).decide(candidates)) == [1, 2])
    }

    @Test("protections are typed, with the names a user acts on; read from what a store found")
    func typedProtections() {
        #expect(
            RetentionPolicy.protections(students: ["a", "b"], aliases: ["prod"], model: "m", kind: "base", number: 1) == [
                .students(["a", "b"]), .aliases(model: "m", ["prod"]), .registeredCheckpoint(model: "m"),
            ])
        #expect(
            RetentionPolicy.protections(students: [], aliases: [], model: "m", kind: "base", number: 2) == [],
            "only a base's @1 is its registered one")
        #expect(RetentionPolicy.protections(students: [], aliases: [], model: "m", kind: "student", number: 1) == [])
        #expect(Protection.descendants(["x", "y"]).description == "it has 2 descendant(s): x, y")
        #expect(Protection.aliases(model: "m", ["a", "b"]).description == "aliased as m@a, m@b")
        let refusal = GraftError.protected("m@1", reasons: [.students(["s"]), .registeredCheckpoint(model: "m")])
        #expect(refusal.description == "m@1 is kept: students derive from it (s); it is the base's registered checkpoint")
    }
}

@Suite("Registry configuration")
struct RegistryConfigurationTests {
    @Test("the root comes from the option, else GRAFT_REGISTRY, else ./registry; thresholds and timeouts from the environment, checked")
    func resolve() throws {
        #expect(try RegistryConfiguration.resolve(option: "/a", environment: ["GRAFT_REGISTRY": "/b"]).root == "/a")
        #expect(try RegistryConfiguration.resolve(option: nil, environment: ["GRAFT_REGISTRY": "/b"]).root == "/b")
        #expect(try RegistryConfiguration.resolve(option: "", environment: [:]).root == "./registry")
        let defaults = try RegistryConfiguration.resolve(option: nil, environment: [:])
        #expect(defaults == RegistryConfiguration(root: "./registry"))
        #expect(defaults.busyTimeout == 30 && defaults.inlineThreshold == 4096 && defaults.durability == .full)
        let tuned = try RegistryConfiguration.resolve(
            option: nil, environment: ["GRAFT_BUSY_TIMEOUT": "2.5", "GRAFT_INLINE_THRESHOLD": "0"])
        #expect(tuned.busyTimeout == 2.5 && tuned.inlineThreshold == 0)
        for bad in [
            ["GRAFT_BUSY_TIMEOUT": "0"], ["GRAFT_BUSY_TIMEOUT": "soon"], ["GRAFT_BUSY_TIMEOUT": "inf"], ["GRAFT_BUSY_TIMEOUT": "90000"],
            ["GRAFT_INLINE_THRESHOLD": "-1"], ["GRAFT_INLINE_THRESHOLD": "4k"],
        ] {
            #expect { try RegistryConfiguration.resolve(option: nil, environment: bad) } throws: { caseName($0) == "invalidName" }
        }
    }
}
