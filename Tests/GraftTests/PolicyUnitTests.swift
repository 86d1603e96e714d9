import Foundation
import SafeTensors
import Testing

@testable import GraftCore

// The core's policies on plain values: no registry, no database, no files. Each test names the
// rule it pins; the registry-level tests (PolicyTests, LineageTests) check the same rules
// end to end through the SQLite store.

private func digest(_ text: String) -> Digest { Digest.of(Array(text.utf8)) }

private func tensor(_ name: String, _ dtype: DType = .f32, _ shape: [Int] = [2], at offset: Int = 0) -> TensorInfo {
    let length = shape.reduce(1, *) * (dtype.bitsPerElement / 8)
    return TensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: offset..<(offset + length))
}

private func manifest(_ entries: [ManifestEntry]) -> ManifestSummary {
    ManifestSummary(parent: "base@1", relation: .finetune, mode: ManifestResolver.mode(of: entries), entries: entries)
}

@Suite("Policy: manifest enforcement")
struct ManifestEnforcementTests {
    let rules = manifest([
        ManifestEntry(name: "features.0.weight", state: .frozen, dtype: .f32, shape: [2], parameters: 2, parentDigest: digest("f0")),
        ManifestEntry(name: "features.1.weight", state: .trainable, dtype: .f32, shape: [2], parameters: 2, parentDigest: digest("f1")),
        ManifestEntry(name: "head.weight", state: .dropped, dtype: .f32, shape: [2], parameters: 2, parentDigest: digest("h")),
        ManifestEntry(name: "new_head.weight", state: .new, parameters: 0),
    ])

    @Test("a base has no rules: nothing is refused, nothing is frozen or new")
    func base() {
        let plan = ManifestEnforcement.plan(nil, tensors: [tensor("anything")])
        #expect(plan == ManifestEnforcement.Plan(violations: [], frozen: [], newTensors: []))
    }

    @Test("a conforming header: frozen tensors are listed for hashing, re-initialised and unknown ones are new")
    func conforming() {
        let tensors = [
            tensor("features.0.weight"), tensor("features.1.weight", .f16, [9]), tensor("new_head.weight", .f32, [5]), tensor("extra"),
        ]
        let plan = ManifestEnforcement.plan(rules, tensors: tensors)
        #expect(plan.violations == [])
        #expect(plan.frozen == [0], "only the frozen tensor, by its index in the header")
        #expect(plan.newTensors == ["new_head.weight", "extra"], "a trainable tensor may change type; it is not new")
    }

    @Test("every offending tensor is named at once: dropped present, frozen and trainable missing, frozen retyped")
    func violations() {
        let retyped = ManifestEnforcement.plan(rules, tensors: [tensor("features.0.weight", .f16), tensor("head.weight")])
        #expect(
            retyped.violations == [
                .retyped(tensor: "features.0.weight", expected: .init(dtype: .f32, shape: [2]), found: .init(dtype: .f16, shape: [2])),
                .missing(tensor: "features.1.weight", state: .trainable),
                .droppedButPresent(tensor: "head.weight"),
            ])
        #expect(
            retyped.violations.map(\.description) == [
                "features.0.weight: frozen, but its type changed (F32 [2] → F16 [2])",
                "features.1.weight: trainable, but missing",
                "head.weight: dropped, but present",
            ])
        #expect(retyped.violations.map(\.rule) == ["retyped", "missing", "dropped_present"])
        #expect(retyped.violations.map(\.tensor) == ["features.0.weight", "features.1.weight", "head.weight"])
        #expect(retyped.violations.map(\.expected) == ["F32 [2]", "trainable", nil])
        #expect(retyped.violations.map(\.found) == ["F16 [2]", nil, nil])
        #expect(retyped.frozen == [], "a retyped frozen tensor is a violation, not something to hash")
        let missing = ManifestEnforcement.plan(rules, tensors: [tensor("features.1.weight")])
        #expect(missing.violations == [.missing(tensor: "features.0.weight", state: .frozen)])
        let reshaped = ManifestEnforcement.plan(rules, tensors: [tensor("features.0.weight", .f32, [1, 2]), tensor("features.1.weight")])
        #expect(
            reshaped.violations == [
                .retyped(tensor: "features.0.weight", expected: .init(dtype: .f32, shape: [2]), found: .init(dtype: .f32, shape: [1, 2]))
            ])
    }

    @Test("frozen drift: a frozen tensor whose digest differs from the parent's is named with both digests; equal ones pass")
    func drift() {
        #expect(ManifestEnforcement.frozenDrift(rules, hashed: [("features.0.weight", digest("f0"))]) == [])
        let changed = ManifestEnforcement.frozenDrift(rules, hashed: [("features.0.weight", digest("other"))])
        #expect(changed == [.changed(tensor: "features.0.weight", expected: digest("f0"), found: digest("other"))])
        #expect(
            changed.map(\.description) == ["features.0.weight: frozen, but changed (\(digest("f0").short)… → \(digest("other").short)…)"])
        #expect(changed.map(\.expected) == [digest("f0").description] && changed.map(\.found) == [digest("other").description])
    }
}

/// A tree of rows as a store returns them: ids, parent links and the checkpoint each derives by.
///
///     base(1) ─@10→ a(2) ─@20→ a1(4)
///             └@11→ b(3) ─@30→ b1(5) ─@50→ b11(6)
private let tree: [LineageRow] = [
    LineageRow(link: 1, via: 10, id: 2, name: "a", kind: "student"),
    LineageRow(link: 1, via: 11, id: 3, name: "b", kind: "student"),
    LineageRow(link: 2, via: 20, id: 4, name: "a1", kind: "student"),
    LineageRow(link: 3, via: 30, id: 5, name: "b1", kind: "student"),
    LineageRow(link: 5, via: 50, id: 6, name: "b11", kind: "student"),
]

@Suite("Policy: advisory inheritance")
struct AdvisoryInheritanceTests {
    @Test("an advisory on a model flags it and every descendant, and nothing beside it")
    func modelLevel() {
        let open = [OpenAdvisory(id: "ADV-b", model: 3, checkpoint: nil, ancestry: [1, 3])]
        let flags = AdvisoryInheritance.propagate(tree, root: 1, inherited: [], open: open)
        #expect(flags == [3: ["ADV-b"], 5: ["ADV-b"], 6: ["ADV-b"]])
    }

    @Test("an advisory on a checkpoint flags only the students derived from that checkpoint, and theirs")
    func checkpointLevel() {
        let open = [OpenAdvisory(id: "ADV-b@30", model: 3, checkpoint: 30, ancestry: [1, 3])]
        let flags = AdvisoryInheritance.propagate(tree, root: 1, inherited: [], open: open)
        #expect(flags == [5: ["ADV-b@30"], 6: ["ADV-b@30"]], "b itself is not flagged as a whole")
        let other = [OpenAdvisory(id: "ADV-b@31", model: 3, checkpoint: 31, ancestry: [1, 3])]
        #expect(AdvisoryInheritance.propagate(tree, root: 1, inherited: [], open: other) == [:], "no student derives from @31")
        #expect(AdvisoryInheritance.flaggedCheckpoints(open + other) == [30, 31])
    }

    @Test("what the root inherits from above reaches its whole subtree")
    func inheritedFromAbove() {
        let flags = AdvisoryInheritance.propagate(
            Array(tree[3...]), root: 3, inherited: ["ADV-up"],
            open: [OpenAdvisory(id: "ADV-up", model: 99, checkpoint: nil, ancestry: [99])])
        #expect(flags == [3: ["ADV-up"], 5: ["ADV-up"], 6: ["ADV-up"]])
    }

    @Test("a model inherits model-level advisories on its chain and checkpoint-level ones on the checkpoints its line passes through")
    func inheritedByChain() {
        // b11's chain, nearest first: b11 (via 50), b1 (via 30), b (via 11), base.
        let chain = [tree[4], tree[3], tree[1], LineageRow(link: nil, via: nil, id: 1, name: "base", kind: "base")]
        let open = [
            OpenAdvisory(id: "on-base", model: 1, checkpoint: nil, ancestry: [1]),
            OpenAdvisory(id: "on-base@11", model: 1, checkpoint: 11, ancestry: [1]),
            OpenAdvisory(id: "on-base@10", model: 1, checkpoint: 10, ancestry: [1]),
            OpenAdvisory(id: "on-a", model: 2, checkpoint: nil, ancestry: [1, 2]),
            OpenAdvisory(id: "on-b11", model: 6, checkpoint: nil, ancestry: [1, 3, 5, 6]),
            OpenAdvisory(id: "on-b11@60", model: 6, checkpoint: 60, ancestry: [1, 3, 5, 6]),
        ]
        #expect(
            AdvisoryInheritance.inherited(chain: chain, open: open) == ["on-base", "on-base@11", "on-b11"],
            "not @10 (a's parent checkpoint), not a's, not b11's own checkpoint advisory")
        #expect(AdvisoryInheritance.inherited(chain: chain, open: []) == [])
        // Each ancestor's flags, folded from the root down: b1 and b inherit base's and @11.
        let folded = AdvisoryInheritance.ancestorFlags(chain: chain, open: open)
        #expect(folded == [5: ["on-base", "on-base@11"], 3: ["on-base", "on-base@11"], 1: ["on-base"]])
    }

    @Test("seeds: within a root only advisories on its subtree start flags; anyWithin looks at the subtree only")
    func seeds() {
        let open = [
            OpenAdvisory(id: "x", model: 2, checkpoint: nil, ancestry: [1, 2]),
            OpenAdvisory(id: "y", model: 5, checkpoint: 50, ancestry: [1, 3, 5]),
        ]
        let all = AdvisoryInheritance.seeds(open, within: nil)
        #expect(all.models.map(\.model) == [2] && all.checkpoints.map(\.checkpoint) == [50])
        let underB = AdvisoryInheritance.seeds(open, within: 3)
        #expect(underB.models.isEmpty && underB.checkpoints.map(\.advisory) == ["y"])
        #expect(AdvisoryInheritance.anyWithin(open, model: 3))
        #expect(!AdvisoryInheritance.anyWithin(open, model: 4))
    }
}

/// The plan's three reads answered from `tree`, as a store answers them.
private func flagsByPlan(_ open: [OpenAdvisory], within root: Int64?, inheritedChain: [LineageRow] = []) -> (
    flags: [Int64: Set<String>], seedCheckpoints: [Int64], subtreeRoots: [Int64]
) {
    func subtree(_ model: Int64) -> [Int64] {
        [model] + tree.filter { $0.link == model }.flatMap { subtree($0.id) }
    }
    let plan = AdvisoryInheritance.FlagPlan(open, within: root)
    var students: [Int64: [Int64]] = [:]
    for checkpoint in plan.seedCheckpoints { students[checkpoint] = tree.filter { $0.via == checkpoint }.map(\.id) }
    let roots = plan.subtreeRoots(students: students, rootChain: inheritedChain)
    let subtrees = Dictionary(uniqueKeysWithValues: roots.map { ($0, subtree($0)) })
    return (plan.flags(students: students, rootChain: inheritedChain, subtrees: subtrees), plan.seedCheckpoints, roots)
}

@Suite("Policy: which models advisories flag (the stores' plan)")
struct FlagPlanTests {
    @Test("the plan flags what propagation down the whole tree flags, for model- and checkpoint-level advisories")
    func agreesWithPropagation() {
        let cases: [[OpenAdvisory]] = [
            [OpenAdvisory(id: "m", model: 3, checkpoint: nil, ancestry: [1, 3])],
            [OpenAdvisory(id: "c", model: 3, checkpoint: 30, ancestry: [1, 3])],
            [OpenAdvisory(id: "c11", model: 1, checkpoint: 11, ancestry: [1])],
            [
                OpenAdvisory(id: "m", model: 2, checkpoint: nil, ancestry: [1, 2]),
                OpenAdvisory(id: "c", model: 5, checkpoint: 50, ancestry: [1, 3, 5]),
                OpenAdvisory(id: "none", model: 5, checkpoint: 51, ancestry: [1, 3, 5]),
            ],
        ]
        for open in cases {
            let planned = flagsByPlan(open, within: nil).flags
            #expect(planned == AdvisoryInheritance.propagate(tree, root: 1, inherited: [], open: open), "\(open.map(\.id))")
        }
    }

    @Test("it asks only for the students of advisories' checkpoints and the subtrees flags start at")
    func readsOnlyWhatItNeeds() {
        let open = [
            OpenAdvisory(id: "c", model: 3, checkpoint: 30, ancestry: [1, 3]),
            OpenAdvisory(id: "m", model: 2, checkpoint: nil, ancestry: [1, 2]),
        ]
        let planned = flagsByPlan(open, within: nil)
        #expect(planned.seedCheckpoints == [30])
        #expect(planned.subtreeRoots == [2, 5], "a's subtree and b1's (the student of @30), each once")
        #expect(planned.flags == [2: ["m"], 4: ["m"], 5: ["c"], 6: ["c"]])
        #expect(AdvisoryInheritance.FlagPlan([], within: nil).isEmpty)
        #expect(flagsByPlan([], within: nil).flags.isEmpty)
    }

    @Test("within a root: advisories outside its subtree start nothing, and what the root inherits flags all of it")
    func withinRoot() {
        let open = [
            OpenAdvisory(id: "on-a", model: 2, checkpoint: nil, ancestry: [1, 2]),
            OpenAdvisory(id: "on-base@11", model: 1, checkpoint: 11, ancestry: [1]),
        ]
        // b's chain: b (via 11), base. b inherits on-base@11 from above; on-a lies outside b's subtree.
        let chain = [tree[1], LineageRow(link: nil, via: nil, id: 1, name: "base", kind: "base")]
        let planned = flagsByPlan(open, within: 3, inheritedChain: chain)
        #expect(planned.seedCheckpoints.isEmpty, "@11 lies above b: not a seed within b")
        #expect(planned.flags == [3: ["on-base@11"], 5: ["on-base@11"], 6: ["on-base@11"]])
        let clean = flagsByPlan([open[0]], within: 3, inheritedChain: chain)
        #expect(clean.flags.isEmpty && clean.subtreeRoots.isEmpty, "nothing inherited, nothing read")
    }
}

@Suite("Policy: removing a model")
struct ModelRemovalTests {
    private let subtree = [
        ModelRemoval.Member(id: 1, name: "base", depth: 1),
        ModelRemoval.Member(id: 3, name: "b", depth: 2),
        ModelRemoval.Member(id: 6, name: "b11", depth: 4),
        ModelRemoval.Member(id: 2, name: "a", depth: 2),
        ModelRemoval.Member(id: 5, name: "B1", depth: 3),
    ]

    @Test("with descendants and no cascade: refused, naming every descendant in byte order")
    func refused() {
        do {
            _ = try ModelRemoval.order(subtree, root: 1, name: "base", cascade: false)
            Issue.record("removed a model with descendants without cascade")
        } catch {
            guard case .protected(let name, let reasons) = error else {
                Issue.record("\(error)")
                return
            }
            #expect(name == "base" && reasons == [.descendants(["B1", "a", "b", "b11"])])
        }
        let alone = [subtree[0]]
        #expect((try? ModelRemoval.order(alone, root: 1, name: "base", cascade: false)) == alone, "no descendants: no cascade needed")
    }

    @Test("cascading: deepest first so no parent goes before its child, names in byte order within a depth")
    func order() throws {
        let ordered = try ModelRemoval.order(subtree, root: 1, name: "base", cascade: true)
        #expect(ordered.map(\.name) == ["b11", "B1", "a", "b", "base"])
    }
}

@Suite("Policy: best selection")
struct BestSelectionTests {
    private func candidate(_ model: String, _ number: Int, _ value: Double) -> RankedCandidate {
        RankedCandidate(
            checkpoint: CheckpointSummary(
                model: ModelName(trusted: model), number: number, ref: "\(model)@\(number)", digest: digest(model), tensorCount: 1,
                parameterCount: 1,
                fileBytes: 1, step: nil, epoch: nil, metadata: [:], createdAt: ""),
            value: value)
    }

    @Test("by value in the direction; ties to the earliest name in binary order, then the lowest number")
    func order() {
        let candidates = [
            candidate("b", 1, 0.9), candidate("a", 2, 0.9), candidate("a", 1, 0.9), candidate("B", 3, 0.9), candidate("c", 1, 0.5),
        ]
        let best = BestSelection.choose(candidates, direction: .max) { _ in false }
        #expect(best.winner?.checkpoint.ref == "B@3", "uppercase sorts before lowercase in binary order")
        #expect(BestSelection.choose(candidates, direction: .min) { _ in false }.winner?.checkpoint.ref == "c@1")
        let withoutB = BestSelection.choose(candidates, direction: .max) { candidates[$0].checkpoint.model.value == "B" }
        #expect(withoutB.winner?.checkpoint.ref == "a@1" && withoutB.excluded == 1)
        #expect(BestSelection.ranksBefore(candidate("a", 1, 0.9), candidate("a", 2, 0.9), direction: .max))
        #expect(!BestSelection.ranksBefore(candidate("a", 2, 0.9), candidate("a", 1, 0.9), direction: .max))
    }

    @Test("the rank order is one list of keys; the SQL stores' ORDER BY is its translation")
    func sqlOrder() {
        #expect(BestSelection.order == [.value, .modelName, .checkpointNumber])
        #expect(BestSelection.sqlOrder({ "\($0)" }, direction: .max) == "value DESC, modelName, checkpointNumber")
        #expect(BestSelection.sqlOrder({ "\($0)" }, direction: .min) == "value ASC, modelName, checkpointNumber")
        #expect(BestSelection.rankingByModelSummaries, "the stores' per-model fast path applies to this order")
    }

    @Test("flagged candidates are all counted; all flagged leaves no winner")
    func flagged() {
        let candidates = [candidate("a", 1, 0.1), candidate("b", 1, 0.2), candidate("c", 1, 0.3)]
        let result = BestSelection.choose(candidates, direction: .max) { $0 != 0 }
        #expect(result.winner?.checkpoint.ref == "a@1" && result.excluded == 2, "flagged ones ranked below the winner count too")
        #expect(BestSelection.choose(candidates, direction: .max) { _ in true }.winner == nil)
    }

    @Test("per-model leaders: the top value among unflagged models, every model reaching it, counts of all")
    func leaders() {
        let models = [
            ModelBest(model: 1, value: 0.8, count: 3), ModelBest(model: 2, value: 0.9, count: 2), ModelBest(model: 3, value: 0.9, count: 1),
            ModelBest(model: 4, value: 0.95, count: 4),
        ]
        let ranked = BestSelection.leaders(models, direction: .max) { $0 == 4 }
        #expect(ranked.top == 0.9 && ranked.leaders == [2, 3] && ranked.candidates == 10 && ranked.excluded == 4)
        let lowest = BestSelection.leaders(models, direction: .min) { _ in false }
        #expect(lowest.top == 0.8 && lowest.leaders == [1])
        let none = BestSelection.leaders(models, direction: .max) { _ in true }
        #expect(none.top == nil && none.leaders.isEmpty && none.excluded == 10)
        #expect(BestSelection.earliest([7: "zeta", 3: "Alpha", 5: "alpha"]) == 3)
    }
}

@Suite("Policy: a metric's direction from its name")
struct DirectionInferenceTests {
    @Test(
        "whole words that mean lower is better minimise, whatever separates them",
        arguments: [
            "loss", "val/loss", "train_loss", "eval-loss", "val.loss", "eval loss", "evalLoss", "Val/Loss", "test/error", "top1_err",
            "perplexity", "val/ppl", "mse", "mae", "rmse", "test/wer", "cer", "nll", "bpc", "fid", "p99_latency",
        ])
    func minimised(_ metric: String) {
        #expect(Direction.inferred(for: metric) == .min, "\(metric)")
    }

    @Test(
        "names that only contain those letters inside a word maximise",
        arguments: [
            "answer_accuracy", "cancer_auc", "apple_acc", "accuracy", "val/accuracy", "f1", "bleu", "losslessness", "errand_rate",
            "fidelity",
            "mser", "Answer", "lossy_psnr", "",
        ])
    func maximised(_ metric: String) {
        #expect(Direction.inferred(for: metric) == .max, "\(metric)")
    }

    @Test("words split at / _ - . spaces and lower-to-upper changes, lowercased")
    func words() {
        #expect(Direction.words(of: "val/answer_Accuracy-top1.mean x") == ["val", "answer", "accuracy", "top1", "mean", "x"])
        #expect(Direction.words(of: "evalLoss") == ["eval", "loss"])
        #expect(Direction.words(of: "WER") == ["wer"], "an all-capitals word stays one word")
        #expect(Direction.words(of: "//a__b") == ["a", "b"])
    }
}

@Suite("Policy: glob patterns (as fnmatch with no flags)")
struct GlobTests {
    private func matches(_ pattern: String, _ text: String) -> Bool {
        Glob.matches(Array(pattern.unicodeScalars), Array(text.unicodeScalars))
    }

    @Test("wildcards, sets, ranges, negation and escapes")
    func cases() {
        #expect(matches("features.*", "features.0.weight"), "* crosses dots")
        #expect(matches("*.weight", "encoder.layer.0.attention.weight"))
        #expect(!matches("*.weight", "encoder.bias"))
        #expect(matches("layer?.conv", "layer3.conv") && !matches("layer?.conv", "layer12.conv"))
        #expect(matches("layer[1-3].*", "layer2.bn") && !matches("layer[1-3].*", "layer4.bn"))
        #expect(matches("layer[!1-3].*", "layer4.bn") && !matches("layer[^1-3].*", "layer1.bn"))
        #expect(matches("a[]]b", "a]b"), "] first in a set is literal")
        #expect(matches("a[\\]x]b", "a]b") && matches("a[\\]x]b", "axb"), "a backslash escapes ] in a set, as glibc's fnmatch")
        #expect(!matches("a[\\]x]b", "a\\b") && !matches("a[\\]x]b", "a]x]b"))
        #expect(matches("a\\*b", "a*b") && !matches("a\\*b", "axb"))
        #expect(matches("a[b", "a[b"), "an unclosed [ is literal")
        #expect(matches("*", "") && !matches("?", ""))
        #expect(matches("*a*a*", "banana") && !matches("*a*a*a*a", "banana"))
    }
}

@Suite("Policy: timestamps")
struct TimestampTests {
    @Test("ISO 8601 UTC with milliseconds, across the epoch, leap days and centuries")
    func format() {
        #expect(timestamp(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(timestamp(Date(timeIntervalSince1970: 951_782_400.5)) == "2000-02-29T00:00:00.500Z")
        #expect(timestamp(Date(timeIntervalSince1970: 1_796_032_882.123)) == "2026-11-30T10:01:22.123Z")
        #expect(timestamp(Date(timeIntervalSince1970: -1)) == "1969-12-31T23:59:59.000Z")
        #expect(timestamp(Date(timeIntervalSince1970: 4_107_542_400)) == "2100-03-01T00:00:00.000Z")
    }
}

@Suite("Free text")
struct FreeTextTests {
    @Test("any Unicode, tabs and line breaks pass; NUL, ESC, DEL and C1 controls are refused with their code and place")
    func controls() throws {
        for text in ["plain", "tabs\tand\nlines\r\n", "ünïcode ✓ 模型", "", String(repeating: "x", count: FreeText.maxBytes)] {
            try FreeText.check(text, what: "description")
        }
        try FreeText.check(nil, what: "description")
        let cases: [(String, String)] = [
            ("a\u{0}b", "U+0000 at character 1"), ("\u{1B}[2J", "U+001B at character 0"), ("x\u{7F}", "U+007F at character 1"),
            ("ok\u{9B}31m", "U+009B at character 2"),
        ]
        for (text, reason) in cases {
            #expect(throws: GraftError.self) { try FreeText.check(text, what: "note") }
            do { try FreeText.check(text, what: "note") } catch {
                #expect(error.description == "invalid note: control character \(reason)")
                #expect(error.kind == .invalidInput)
            }
        }
        do {
            try FreeText.check(String(repeating: "x", count: FreeText.maxBytes + 1), what: "note")
            Issue.record("over the cap")
        } catch {
            #expect(error.description.contains("at most \(FreeText.maxBytes)"))
        }
    }
}
