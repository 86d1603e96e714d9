import Foundation
import GraftTestSupport
import SafeTensors
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftSQLite

/// base ─┬─ a (feature extraction) ── a1 (distillation of a@2) ── a2
///       └─ b (full fine-tune)
private func family() async throws -> TestRegistry {
    let test = try await TestRegistry()
    let registry = test.registry
    let basePath = try test.writeBase()
    _ = try await registry.addBase(name: ModelName("base"), file: basePath)
    _ = try await registry.createStudent(
        name: ModelName("a"), from: Reference(parsing: "base@1"), manifest: .rules([ManifestRule(.freeze, "*")], freezeThrough: nil))
    _ = try await registry.createStudent(name: ModelName("b"), from: Reference(parsing: "base"), manifest: .rules([], freezeThrough: nil))
    _ = try await registry.addCheckpoint(
        model: ModelName("a"), file: basePath,
        metrics: [try MetricAssignment(parsing: "accuracy=0.70"), try MetricAssignment(parsing: "loss=0.9")], split: "val")
    _ = try await registry.addCheckpoint(
        model: ModelName("a"), file: basePath,
        metrics: [try MetricAssignment(parsing: "accuracy=0.80"), try MetricAssignment(parsing: "loss=0.5")], split: "val")
    _ = try await registry.addCheckpoint(
        model: ModelName("b"), file: basePath,
        metrics: [try MetricAssignment(parsing: "accuracy=0.80"), try MetricAssignment(parsing: "loss=0.7")], split: "val")
    _ = try await registry.createStudent(
        name: ModelName("a1"), from: Reference(parsing: "a@2"), relation: .distillation, manifest: .rules([], freezeThrough: nil))
    _ = try await registry.addCheckpoint(
        model: ModelName("a1"), file: basePath, metrics: [try MetricAssignment(parsing: "accuracy=0.75")], split: "val")
    _ = try await registry.createStudent(name: ModelName("a2"), from: Reference(parsing: "a1"), manifest: .rules([], freezeThrough: nil))
    _ = try await registry.addCheckpoint(
        model: ModelName("a2"), file: basePath, metrics: [try MetricAssignment(parsing: "accuracy=0.95")], split: "test")
    return test
}

@Suite("Metrics")
struct MetricTests {
    @Test(
        "KEY=VALUE parsing refuses malformed pairs, bad names, NaN and infinities",
        arguments: ["accuracy", "=1", "a b=1", "acc=high", "acc=nan", "acc=inf", "acc=-Infinity", "acc=", "x,y=1"])
    func badAssignments(_ text: String) {
        #expect { _ = try MetricAssignment(parsing: text) } throws: { error in
            if case GraftError.invalidMetric = error { true } else { false }
        }
    }

    @Test("evaluations replace per metric and split; curves import from CSV and JSON lines")
    func logging() async throws {
        let test = try await family()
        try await test.registry.logMetrics(Reference(parsing: "b"), [try MetricAssignment(parsing: "accuracy=0.81")], split: "val")
        try await test.registry.logMetrics(Reference(parsing: "b@1"), [try MetricAssignment(parsing: "accuracy=0.6")], split: "test")
        let report = try await test.registry.metrics(Reference(parsing: "b@1"))
        #expect(report.checkpoints.first?.metrics.filter { $0.name == "accuracy" }.map(\.value).sorted() == [0.6, 0.81])
        let wide = try await test.registry.importCurves(
            model: ModelName("b"), bytes: Array("step,loss,val/acc\n1,0.9,0.1\n2,0.8,\n3,0.7,0.3\n".utf8))
        #expect(wide.rows == 5 && wide.curves == ["loss", "val/acc"])
        let long = try await test.registry.importCurves(model: ModelName("b"), bytes: Array("step,name,value\r\n4,loss,0.6\r\n".utf8))
        #expect(long.rows == 1)
        let jsonl = try await test.registry.importCurves(
            model: ModelName("b"), bytes: Array("{\"step\": 5, \"loss\": 0.5}\n\n{\"step\": 6, \"name\": \"loss\", \"value\": 0.4}\n".utf8))
        #expect(jsonl.rows == 2)
        try await test.registry.logCurve(model: ModelName("b"), step: 7, [try MetricAssignment(parsing: "loss=0.35")])
        try await test.registry.logCurve(model: ModelName("b"), step: 7, [try MetricAssignment(parsing: "loss=0.3")])  // replaces
        let curves = try await test.registry.metrics(Reference(parsing: "b")).curves
        #expect(
            curves.first { $0.name == "loss" }
                == CurveSummary(name: "loss", points: 7, firstStep: 1, lastStep: 7, lastValue: 0.3, minimum: 0.3, maximum: 0.9))
        // Bulk imports go many rows to a statement: 600 steps span several; a step repeated in
        // the file keeps its last value, and a later import replaces values.
        let bulk = "step,bulk\n" + (0..<600).map { "\($0),\($0)" }.joined(separator: "\n") + "\n599,-1\n"
        #expect(try await test.registry.importCurves(model: ModelName("b"), bytes: Array(bulk.utf8)).rows == 601)
        _ = try await test.registry.importCurves(model: ModelName("b"), bytes: Array("step,bulk\n300,1000\n".utf8))
        let summary = try await test.registry.metrics(Reference(parsing: "b")).curves.first { $0.name == "bulk" }
        #expect(summary == CurveSummary(name: "bulk", points: 600, firstStep: 0, lastStep: 599, lastValue: -1, minimum: -1, maximum: 1000))
    }

    @Test(
        "bad curve files are refused with their line, storing nothing",
        arguments: [
            "loss,acc\n1,2\n", "step,loss\n1,nan\n", "step,loss\n1,0.5,9\n", "step,loss\nx,0.5\n", "{\"step\": 1, \"loss\": \"high\"}\n",
            "{\"loss\": 1}\n", "",
        ])
    func badCurves(_ text: String) async throws {
        let test = try await family()
        await #expect { _ = try await test.registry.importCurves(model: ModelName("b"), bytes: Array(text.utf8)) } throws: { error in
            if case GraftError.invalidMetric = error { true } else { false }
        }
        #expect(try test.rows("SELECT count(*) FROM curve_points") == 0)
    }
}

@Suite("Best checkpoint")
struct BestTests {
    @Test("direction comes from the name unless given; --model, --under and the whole registry")
    func scopes() async throws {
        let test = try await family()
        let r = test.registry
        let overall = try await r.best(metric: "accuracy", split: "val")
        #expect(overall.checkpoint.ref == "a@2" && overall.direction == .max && overall.directionInferred)
        #expect(overall.candidates == 4)
        #expect(try await r.best(metric: "loss", split: "val").checkpoint.ref == "a@2")
        #expect(try await r.best(metric: "loss", direction: .max, split: "val").checkpoint.ref == "a@1")
        #expect(try await r.best(metric: "accuracy", split: "val", scope: .model(ModelName("b"))).checkpoint.ref == "b@1")
        #expect(try await r.best(metric: "accuracy", split: "val", scope: .under(ModelName("a1"))).checkpoint.ref == "a1@1")
        #expect(try await r.best(metric: "accuracy", split: "test", scope: .under(ModelName("base"))).checkpoint.ref == "a2@1")
    }

    @Test("ties go to the earliest: model name, then checkpoint number")
    func ties() async throws {
        let test = try await family()
        // a@2 and b@1 both have accuracy 0.80 on val; a@2's 0.80 is the maximum.
        let best = try await test.registry.best(metric: "accuracy", split: "val", scope: .under(ModelName("base")))
        #expect(best.checkpoint.ref == "a@2")
        try await test.registry.logMetrics(Reference(parsing: "a@1"), [try MetricAssignment(parsing: "accuracy=0.80")], split: "val")
        #expect(try await test.registry.best(metric: "accuracy", split: "val").checkpoint.ref == "a@1")
    }

    @Test("best --under ranks model by model: flagged models left out and counted, ties by model name")
    func underPerModel() async throws {
        let test = try await family()
        #expect(try await test.registry.best(metric: "accuracy", split: "val", scope: .under(ModelName("base"))).checkpoint.ref == "a@2")
        try await test.registry.addAdvisory(on: Reference(parsing: "a"), id: "M1", severity: .medium)
        let best = try await test.registry.best(metric: "accuracy", split: "val", scope: .under(ModelName("base")))
        #expect(best.checkpoint.ref == "b@1")
        #expect(best.candidates == 4 && best.excludedFlagged == 3, "a@1, a@2 and a1@1 inherit M1")
        let loss = try await test.registry.best(metric: "loss", split: "val", scope: .under(ModelName("base")), includeFlagged: true)
        #expect(loss.checkpoint.ref == "a@2" && loss.direction == .min && loss.excludedFlagged == 0)
        await #expect { _ = try await test.registry.best(metric: "accuracy", split: "val", scope: .under(ModelName("a"))) } throws: {
            error in
            if case GraftError.allCandidatesFlagged(_, 3) = error { true } else { false }
        }
    }

    @Test("flagged checkpoints are left out and counted; an unknown metric names the known ones")
    func flagsAndErrors() async throws {
        let test = try await family()
        try await test.registry.addAdvisory(on: Reference(parsing: "a@2"), id: "GRAFT-7", severity: .critical, note: "backdoor")
        // a@2 itself and every student derived from it (a1, a2) are out; a@1 is not.
        let best = try await test.registry.best(metric: "accuracy", split: "val")
        #expect(best.checkpoint.ref == "b@1" && best.excludedFlagged == 2)
        #expect(try await test.registry.best(metric: "accuracy", split: "val", includeFlagged: true).checkpoint.ref == "a@2")
        await #expect { _ = try await test.registry.best(metric: "acuracy") } throws: { error in
            if case GraftError.unknownMetric(_, let known) = error { known.contains("accuracy") } else { false }
        }
        await #expect { _ = try await test.registry.best(metric: "accuracy", split: "test") } throws: { error in
            if case GraftError.allCandidatesFlagged(_, 1) = error { true } else { false }
        }
        try await test.registry.resolveAdvisory("GRAFT-7")
        #expect(try await test.registry.best(metric: "accuracy", split: "val").checkpoint.ref == "a@2")
    }
}

@Suite("Lineage and advisories")
struct LineageTests {
    @Test("ancestors up to the root with exact parent checkpoints; descendants at any depth")
    func lineage() async throws {
        let test = try await family()
        let up = try await test.registry.lineage(ModelName("a2"))
        #expect(up.ancestors.map(\.name) == ["a1", "a", "base"])
        #expect(up.model.parent == "a1@1")
        #expect(up.ancestors.map(\.parent) == ["a@2", "base@1", nil])
        #expect(up.ancestors[0].relation == .distillation)
        #expect(up.ancestors[1].mode == .featureExtraction)
        let down = try await test.registry.lineage(ModelName("base"), metric: "accuracy")
        #expect(down.descendants.map(\.name) == ["a", "a1", "a2", "b"])
        #expect(down.descendants.map(\.depth) == [1, 2, 3, 1])
        #expect(down.descendants.first { $0.name == "a" }?.best == 0.80)
        #expect(down.descendants.first { $0.name == "b" }?.mode == .fullFinetune)
    }

    @Test("an advisory on a base flags every descendant, with the path of inheritance")
    func affected() async throws {
        let test = try await family()
        try await test.registry.addAdvisory(
            on: Reference(parsing: "base"), id: "CVE-2018-0001", severity: .high, url: "https://example.org/adv")
        let affected = try await test.registry.affected(Reference(parsing: "base"))
        #expect(affected.map(\.model) == ["a", "b", "a1", "a2"])
        #expect(affected.first { $0.model == "a2" }?.path == ["base@1", "a@2", "a1@1", "a2"])
        #expect(affected.first { $0.model == "a" }?.checkpoints == ["a@1", "a@2"])
        #expect(affected.allSatisfy { $0.advisories == ["CVE-2018-0001"] })
        let lineage = try await test.registry.lineage(ModelName("a1"))
        #expect(lineage.model.advisories == ["CVE-2018-0001"])
        #expect(try await test.registry.advisories().map(\.id) == ["CVE-2018-0001"])
        try await test.registry.resolveAdvisory("CVE-2018-0001")
        #expect(try await test.registry.affected(Reference(parsing: "base")).isEmpty)
        #expect(try await test.registry.advisories().isEmpty)
        #expect(try await test.registry.advisories(includeResolved: true).first?.resolvedAt != nil)
    }

    @Test("a checkpoint advisory flags only students derived from that checkpoint")
    func checkpointAdvisory() async throws {
        let test = try await family()
        try await test.registry.addAdvisory(on: Reference(parsing: "a@1"), id: "A1", severity: .low)
        #expect(try await test.registry.affected(Reference(parsing: "a")).isEmpty, "a1 derives from a@2, not a@1")
        #expect(try await test.registry.lineage(ModelName("a")).model.advisories == ["A1@1"])
        await expectGraftError("advisoryExists") {
            try await test.registry.addAdvisory(on: Reference(parsing: "a"), id: "A1", severity: .low)
        }
        await expectGraftError("advisoryNotFound") { try await test.registry.resolveAdvisory("nope") }
        await expectGraftError("invalidName") {
            try await test.registry.addAdvisory(on: Reference(parsing: "a"), id: "../x", severity: .low)
        }
    }

    @Test("best --under follows replaced values and removed checkpoints (metric summaries)")
    func bestFollowsChanges() async throws {
        let test = try await family()
        let under = BestScope.under(try ModelName("base"))
        var best = try await test.registry.best(metric: "accuracy", split: "val", scope: under)
        #expect(best.checkpoint.ref == "a@2" && best.value == 0.80 && best.candidates == 4, "a tie with b@1 goes to the earlier name")
        try await test.registry.logMetrics(Reference(parsing: "a@2"), [try MetricAssignment(parsing: "accuracy=0.5")], split: "val")
        best = try await test.registry.best(metric: "accuracy", split: "val", scope: under)
        #expect(best.checkpoint.ref == "b@1" && best.candidates == 4)
        best = try await test.registry.best(metric: "accuracy", direction: .min, split: "val", scope: under)
        #expect(best.checkpoint.ref == "a@2" && best.value == 0.5)
        _ = try await test.registry.removeCheckpoint(Reference(parsing: "b@1"))
        best = try await test.registry.best(metric: "accuracy", split: "val", scope: under)
        #expect(best.checkpoint.ref == "a1@1" && best.value == 0.75 && best.candidates == 3)
        #expect(try await test.registry.verify().lineageProblems == [])
    }

    @Test("lineage reads only the part asked for, with the same nodes and flags as the whole")
    func lineageParts() async throws {
        let test = try await family()
        try await test.registry.addAdvisory(on: Reference(parsing: "base"), id: "B1", severity: .high)
        try await test.registry.addAdvisory(on: Reference(parsing: "a@2"), id: "A2", severity: .low)
        let whole = try await test.registry.lineage(ModelName("a1"))
        #expect(whole.ancestors.map(\.name) == ["a", "base"] && whole.descendants.map(\.name) == ["a2"])
        #expect(whole.model.advisories == ["A2", "B1"] && whole.descendants.first?.advisories == ["A2", "B1"])
        let up = try await test.registry.lineage(ModelName("a1"), parts: .ancestors)
        #expect(up.model == whole.model && up.ancestors == whole.ancestors && up.descendants.isEmpty)
        let down = try await test.registry.lineage(ModelName("a1"), parts: .descendants)
        #expect(down.model == whole.model && down.descendants == whole.descendants && down.ancestors.isEmpty)
    }

    @Test("lineage, best, affected and advisories use indexes, not full scans")
    func queryPlans() async throws {
        let test = try await family()
        let plans = try test.plans([
            "SELECT p.model_id FROM model_parents p WHERE p.parent_model_id = 1",
            "SELECT parent_model_id FROM model_parents WHERE model_id = 1",
            "SELECT * FROM metrics mt WHERE mt.name = 'a' AND mt.split = ''",
            "SELECT * FROM metrics WHERE checkpoint_id = 1",
            "SELECT value FROM curve_points WHERE curve_id = 1 ORDER BY step DESC LIMIT 1",
            "SELECT id FROM curves WHERE model_id = 1 AND name = 'loss'",
            "SELECT checkpoint_id FROM advisories WHERE resolved_at IS NULL AND checkpoint_id = 3",
            "SELECT model_id FROM advisories WHERE resolved_at IS NULL AND model_id = 3",
            "SELECT model_id, number FROM checkpoints WHERE model_id IN (SELECT value FROM json_each('[1,2]'))",
            // best --model and best --under, as Registry.best builds them
            "SELECT c.id FROM metrics mt JOIN checkpoints c ON c.id = mt.checkpoint_id JOIN models m ON m.id = c.model_id "
                + "WHERE mt.name = 'accuracy' AND mt.split = 'val' AND mt.model_id = 2 ORDER BY mt.value DESC, m.name, c.number",
            "SELECT c.id FROM metrics mt JOIN checkpoints c ON c.id = mt.checkpoint_id JOIN models m ON m.id = c.model_id "
                + """
                WHERE mt.name = 'accuracy' AND mt.split = 'val' AND mt.model_id IN\
                 (\(SQLiteMetadataStore.subtreeSQL.replacingOccurrences(of: "?", with: "1")))
                """,
            // The lineage, affected and best --under statements themselves.
            SQLiteMetadataStore.descendantsSQL.replacingOccurrences(of: "?1", with: "1"),
            SQLiteMetadataStore.ancestorsSQL.replacingOccurrences(of: "?", with: "'[3,2,1]'"),
            SQLiteMetadataStore.bestPerModelSQL(.max).replacingOccurrences(of: "r.id = ?", with: "r.id = 1").replacingOccurrences(
                of: "?", with: "'accuracy'"),
            SQLiteMetadataStore.bestPerModelSQL(.min).replacingOccurrences(of: "r.id = ?", with: "r.id = 1").replacingOccurrences(
                of: "?", with: "'loss'"),
        ])
        // json_each's rows (j) are scanned by design; no stored table may be.
        let tables = ["mt", "c", "m", "r", "p", "metrics", "checkpoints", "models", "model_parents", "advisories", "curve_points"]
        for plan in plans {
            for table in tables {
                #expect(!plan.contains("SCAN \(table) ") && !plan.hasSuffix("SCAN \(table)"), "table scan of \(table): \(plan)")
            }
        }
        // A subtree is one range of the lineage-path index, read without a lookup per model,
        // and nothing is sorted.
        for plan in plans[plans.count - 4..<plans.count - 2] where !plan.contains("VIRTUAL TABLE") {
            #expect(plan.contains("SEARCH m USING COVERING INDEX models_by_lineage_path (lineage_path>? AND lineage_path<?)"), "\(plan)")
            #expect(!plan.contains("TEMP B-TREE"), "\(plan)")
        }
        for plan in plans.suffix(2) {
            #expect(
                plan.contains(
                    "SEARCH s USING COVERING INDEX metric_summaries_by_subtree (name=? AND split=? AND lineage_path>? AND lineage_path<?)"),
                "\(plan)")
        }
    }
}
